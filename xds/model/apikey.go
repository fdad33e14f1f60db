package model

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// DefaultAPIKeyHeader is the header an APIKeyProvider reads keys from unless it names another.
const DefaultAPIKeyHeader = "x-api-key"

// APIKeyAuthorizationScheme prefixes a key sent in the Authorization header, when a provider's
// header is "authorization": "Authorization: ApiKey <key>". Any other scheme (Bearer) is not an
// API key, so a JWTProvider can read the same header.
const APIKeyAuthorizationScheme = "ApiKey "

// APIKeyHashAlgorithm is the one algorithm of APIKey.Hash: SHA-256 over salt and secret. The
// secrets are 256 random bits, so a fast hash is enough (nobody can guess one); a slow password
// hash would cost every request milliseconds of CPU for nothing (docs/security.md).
const APIKeyHashAlgorithm = "sha256"

// Sizes of an APIKey.Hash's parts, in bytes.
const (
	APIKeySaltBytes   = 16
	APIKeyDigestBytes = 32
)

// MaxAPIKeysPerProvider bounds an APIKeyProvider's keys.
const MaxAPIKeysPerProvider = 1000

// APIKeyProviderDoc holds API keys — each as a salted hash, never the key itself — with the
// identity and attributes of the client holding it. Like a JWTProvider, it acts on requests for
// the services of its namespace, or of every namespace in the root namespace.
type APIKeyProviderDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta         `json:"metadata"`
	Spec     APIKeyProviderSpec `json:"spec"`
}

// APIKeyProviderSpec says where keys are presented and which keys are valid.
type APIKeyProviderSpec struct {
	// Header carrying the key: "x-api-key" unless set. "authorization" reads
	// "Authorization: ApiKey <key>" and leaves other schemes (Bearer tokens) alone.
	Header string `json:"header,omitempty"`
	// Keys, each with an id unique in the provider. `portcullis apikey create` adds them.
	// +kubebuilder:validation:MaxItems=1000
	Keys []APIKey `json:"keys,omitempty"`
}

// APIKey is one key: its public id, its salted hash, and who holds it. Several keys may share
// an identity, so a client can rotate its key with an overlap.
type APIKey struct {
	// ID is public: it is part of the key text (pck_<id>_<secret>), and logs, traces and the
	// decision log name the key by it.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ID string `json:"id"`
	// Hash is "sha256:<salt>:<digest>", both unpadded base64url; the digest is SHA-256 of the
	// salt followed by the key's secret.
	// +kubebuilder:validation:Pattern=`^sha256:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+$`
	Hash string `json:"hash"`
	// Identity is who holds the key (a subject: "batch-exporter"); policies and rate limits
	// use it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Identity string `json:"identity"`
	// Attributes of the holder (owner, scopes, tenant, ...): each a list of strings, tested by
	// from.apiKey.attributes like JWT claims.
	Attributes map[string][]string `json:"attributes,omitempty"`
	// Expires is required (RFC 3339): a key without an end is a key nobody remembers to remove.
	// +kubebuilder:validation:Format=date-time
	Expires string `json:"expires"`
	// NotBefore (RFC 3339) is when the key becomes valid; at once unless set.
	// +kubebuilder:validation:Format=date-time
	NotBefore string `json:"notBefore,omitempty"`
	// Revoked refuses the key (401, code "revoked") before its expiry.
	Revoked bool `json:"revoked,omitempty"`
}

// attributeName is the name of an API key attribute: one claim-path segment.
var attributeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)

// GetKind implements Object.
func (d *APIKeyProviderDoc) GetKind() string { return KindAPIKeyProvider }

// GetMeta implements Object.
func (d *APIKeyProviderDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the APIKeyProvider document on its own.
func (d *APIKeyProviderDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	s, p := &d.Spec, Path("spec")
	if s.Header != "" && !isHeaderName(s.Header) {
		errs.Addf(p.Field("header"), "%q is not a valid header name", s.Header)
	}
	if len(s.Keys) > MaxAPIKeysPerProvider {
		errs.Addf(p.Field("keys"), "at most %d keys, not %d", MaxAPIKeysPerProvider, len(s.Keys))
	}
	ids := map[string]int{}
	for i := range s.Keys {
		k, kp := &s.Keys[i], p.Field("keys").Index(i)
		validateDNSLabel(&errs, kp.Field("id"), k.ID)
		if first, dup := ids[k.ID]; dup && k.ID != "" {
			errs.Addf(kp.Field("id"), "duplicate key id %q (first at keys[%d])", k.ID, first)
		} else {
			ids[k.ID] = i
		}
		if _, _, err := ParseAPIKeyHash(k.Hash); err != nil {
			errs.Addf(kp.Field("hash"), "%v", err)
		}
		switch {
		case k.Identity == "":
			errs.Addf(kp.Field("identity"), "required")
		case len(k.Identity) > 253 || strings.ContainsFunc(k.Identity, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			errs.Addf(kp.Field("identity"), "must be at most 253 characters without spaces or control characters")
		}
		for name, vals := range k.Attributes {
			ap := kp.Field("attributes").Key(name)
			if !attributeName.MatchString(name) {
				errs.Addf(ap, "attribute names are letters, digits, '_' and '-' (up to 63), not %q", name)
			}
			if len(vals) == 0 {
				errs.Addf(ap, "must list at least one value")
			}
			for j, v := range vals {
				if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
					errs.Addf(ap.Index(j), "must be a non-empty string without control characters")
				}
			}
		}
		exp, err := time.Parse(time.RFC3339, k.Expires)
		switch {
		case k.Expires == "":
			errs.Addf(kp.Field("expires"), "required (RFC 3339, e.g. \"2027-03-01T00:00:00Z\"): every key has an end")
		case err != nil:
			errs.Addf(kp.Field("expires"), "must be an RFC 3339 time like \"2027-03-01T00:00:00Z\", not %q", k.Expires)
		}
		if k.NotBefore != "" {
			nbf, err2 := time.Parse(time.RFC3339, k.NotBefore)
			switch {
			case err2 != nil:
				errs.Addf(kp.Field("notBefore"), "must be an RFC 3339 time like \"2027-03-01T00:00:00Z\", not %q", k.NotBefore)
			case err == nil && !nbf.Before(exp):
				errs.Addf(kp.Field("notBefore"), "must be before expires (%s)", k.Expires)
			}
		}
	}
	return errs
}

func (d *APIKeyProviderDoc) setDefaults() {
	d.Spec.Header = strings.ToLower(d.Spec.Header)
	if d.Spec.Header == "" {
		d.Spec.Header = DefaultAPIKeyHeader
	}
	for i := range d.Spec.Keys {
		if d.Spec.Keys[i].Attributes != nil {
			for _, v := range d.Spec.Keys[i].Attributes {
				slices.Sort(v) // attributes are sets; one order keeps the mesh version stable
			}
		}
	}
}

// Validity returns when a key of a built mesh becomes valid (zero: at once) and expires.
func (k *APIKey) Validity() (notBefore, expires time.Time) {
	expires, _ = time.Parse(time.RFC3339, k.Expires) // validated by Build
	if k.NotBefore != "" {
		notBefore, _ = time.Parse(time.RFC3339, k.NotBefore)
	}
	return notBefore, expires
}

// FormatAPIKeyHash writes an APIKey.Hash.
func FormatAPIKeyHash(salt, digest []byte) string {
	return APIKeyHashAlgorithm + ":" + base64.RawURLEncoding.EncodeToString(salt) + ":" + base64.RawURLEncoding.EncodeToString(digest)
}

// ParseAPIKeyHash reads an APIKey.Hash into its salt and digest.
func ParseAPIKeyHash(s string) (salt, digest []byte, err error) {
	alg, rest, ok := strings.Cut(s, ":")
	saltText, digestText, ok2 := strings.Cut(rest, ":")
	if s == "" {
		return nil, nil, errors.New("required")
	}
	if !ok || !ok2 || alg != APIKeyHashAlgorithm {
		return nil, nil, errors.New(`must be "sha256:<salt>:<digest>" (unpadded base64url), as portcullis apikey create writes it`)
	}
	salt, err1 := base64.RawURLEncoding.DecodeString(saltText)
	digest, err2 := base64.RawURLEncoding.DecodeString(digestText)
	switch {
	case err1 != nil || len(salt) < APIKeySaltBytes:
		return nil, nil, fmt.Errorf("the salt must be at least %d bytes of unpadded base64url", APIKeySaltBytes)
	case err2 != nil || len(digest) != APIKeyDigestBytes:
		return nil, nil, fmt.Errorf("the digest must be %d bytes of unpadded base64url", APIKeyDigestBytes)
	}
	return salt, digest, nil
}

// APIKeyProvider returns the provider a policy of namespace ns names: the one called name in ns,
// else the one in the root namespace; nil when neither exists.
func (m *Mesh) APIKeyProvider(ns, name string) *APIKeyProviderDoc {
	var found *APIKeyProviderDoc
	resolveProvider(ns, m.RootNamespace(), name, func(r Ref) bool {
		i, ok := slices.BinarySearchFunc(m.APIKeyProviders, r, func(p *APIKeyProviderDoc, r Ref) int { return compareRef(RefOf(p), r) })
		if ok {
			found = m.APIKeyProviders[i]
		}
		return ok
	})
	return found
}
