package jwt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// maxClaimDepth bounds how deep nested claims are flattened; deeper values are not addressable
// by claim paths (Rego still sees them).
const maxClaimDepth = 16

// MaxTokenBytes is the largest token accepted; larger ones are rejected before any parsing. It
// is above the 60 KiB that Envoy's inbound listeners take in all of a request's headers (their
// default), so it refuses no token that Envoy let through: where Envoy verifies tokens itself
// (engine auto), that header limit is the only bound, and both decide alike.
const MaxTokenBytes = 64 << 10

// Token is a verified token. It is immutable and shared between requests (it is cached), so
// callers must not modify it or the maps it returns.
type Token struct {
	// Providers that verified the token, as "namespace/name", sorted. Usually one; several when
	// providers share an issuer and all accept the token.
	Providers []string
	Issuer    string
	Subject   string
	// ID is the "jti" claim when it is a string (RFC 7519), "" otherwise: what revocations name
	// a single token by.
	ID       string
	Audience []string
	// KeyID and Algorithm come from the token's header.
	KeyID     string
	Algorithm string
	Expiry    time.Time
	NotBefore time.Time
	IssuedAt  time.Time
	Claims    Claims
}

// VerifiedBy reports whether the named provider ("namespace/name") verified the token.
func (t *Token) VerifiedBy(provider string) bool {
	_, ok := slices.BinarySearch(t.Providers, provider)
	return ok
}

// ClaimValue is a claim's value in its JSON spelling: a string as is, a number as written,
// true/false. List is true when the value (or a value on its path) was a JSON array, in which
// case Values holds its scalar elements.
type ClaimValue struct {
	Values []string
	List   bool
}

// Claims are a token's claims, decoded once and flattened so that policies look up a dot path
// ("realm_access.roles") with one map access.
type Claims struct {
	raw  map[string]any
	flat map[string]ClaimValue
	// ambiguous are the dot paths that name two claims (NewClaims); nil when none do.
	ambiguous map[string]bool
}

// Get returns the claim at a dot path. A path through an array of objects collects the field of
// every element ("groups.name"). A path that names two claims is absent (see NewClaims).
func (c Claims) Get(path string) (ClaimValue, bool) {
	v, ok := c.flat[path]
	return v, ok
}

// Ambiguous reports whether a dot path names two different claims (see NewClaims).
func (c Claims) Ambiguous(path string) bool { return c.ambiguous[path] }

// Raw returns the decoded claims (numbers as json.Number) for the Rego input. Do not modify it.
func (c Claims) Raw() map[string]any { return c.raw }

// Len returns the number of addressable claim paths.
func (c Claims) Len() int { return len(c.flat) }

// NewClaims decodes and flattens a claims object. Numbers stay as written (json.Number).
//
// A dot path can name two claims: "realm_access.roles" is the nested roles of realm_access and
// also a top-level claim of that literal name (the issuer decides the first, and whoever can
// add claims to a token perhaps the second). Such a path is ambiguous and absent: it matches no
// test, so neither claim can stand in for the other.
func NewClaims(raw map[string]any) Claims {
	f := flattener{c: Claims{raw: raw, flat: make(map[string]ClaimValue, len(raw))}, keys: map[string]string{}}
	for k, v := range raw {
		f.add(k, keyPath("", k), v, false, 0)
	}
	for path := range f.c.ambiguous {
		delete(f.c.flat, path)
	}
	return f.c
}

// flattener builds Claims, remembering which keys each dot path was reached by.
type flattener struct {
	c Claims
	// keys is, for each dot path, the keys that reached it (keyPath): another sequence of keys
	// reaching the same path makes it ambiguous.
	keys map[string]string
}

// keyPath extends a sequence of object keys unambiguously (length-prefixed, so keys holding
// dots or digits cannot run together).
func keyPath(prefix, key string) string { return prefix + strconv.Itoa(len(key)) + ":" + key }

// reach records that keys reached path, and reports whether the path is still unambiguous.
func (f *flattener) reach(path, keys string) bool {
	if f.c.ambiguous[path] {
		return false
	}
	prev, ok := f.keys[path]
	if !ok {
		f.keys[path] = keys
		return true
	}
	if prev == keys {
		return true
	}
	if f.c.ambiguous == nil {
		f.c.ambiguous = map[string]bool{}
	}
	f.c.ambiguous[path] = true
	return false
}

func (f *flattener) add(path, keys string, v any, inList bool, depth int) {
	if depth > maxClaimDepth {
		return
	}
	c := &f.c
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			f.add(path+"."+k, keyPath(keys, k), e, inList, depth+1)
		}
	case []any:
		if !f.reach(path, keys) {
			return
		}
		cv := c.flat[path]
		cv.List = true
		c.flat[path] = cv
		for _, e := range x {
			if _, nested := e.([]any); nested {
				// A list in a list is not looked into, as Envoy's claim matchers do not (engine
				// auto): ["a", ["b"]] has the element "a" only.
				continue
			}
			f.add(path, keys, e, true, depth+1)
		}
	case nil:
		// null is absent: it matches no operator.
	default:
		s, ok := scalarString(x)
		if !ok || !f.reach(path, keys) {
			return
		}
		cv := c.flat[path]
		cv.Values = append(cv.Values, s)
		cv.List = cv.List || inList
		c.flat[path] = cv
	}
}

// scalarString spells a JSON scalar the way policies compare it.
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	}
	return "", false
}

// decodeClaims decodes a JSON claims object, keeping numbers as written.
func decodeClaims(payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("claims are not a JSON object: %w", err)
	}
	if raw == nil {
		return nil, fmt.Errorf("claims are not a JSON object")
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the claims object")
	}
	return raw, nil
}

// registered holds the registered claims of a token, checked for type.
type registered struct {
	issuer, subject, id         string
	audience                    []string
	expiry, notBefore, issuedAt time.Time
	hasExp                      bool
	hasNbf, hasIat              bool
}

func parseRegistered(raw map[string]any) (registered, error) {
	var r registered
	var err error
	if r.issuer, err = optionalString(raw, "iss"); err != nil {
		return r, err
	}
	if r.subject, err = optionalString(raw, "sub"); err != nil {
		return r, err
	}
	// Lenient: a jti of another type was never refused, and only revocation by jti reads it.
	r.id, _ = raw["jti"].(string)
	switch aud := raw["aud"].(type) {
	case nil:
	case string:
		r.audience = []string{aud}
	case []any:
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return r, fmt.Errorf("aud must be a string or a list of strings")
			}
			r.audience = append(r.audience, s)
		}
	default:
		return r, fmt.Errorf("aud must be a string or a list of strings")
	}
	for _, f := range []struct {
		name string
		t    *time.Time
		has  *bool
	}{{"exp", &r.expiry, &r.hasExp}, {"nbf", &r.notBefore, &r.hasNbf}, {"iat", &r.issuedAt, &r.hasIat}} {
		v, ok := raw[f.name]
		if !ok || v == nil {
			continue
		}
		t, err := numericDate(v)
		if err != nil {
			return r, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.t, *f.has = t, true
	}
	return r, nil
}

func optionalString(raw map[string]any, name string) (string, error) {
	switch v := raw[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", fmt.Errorf("%s must be a string", name)
}

// numericDate parses a JWT NumericDate (seconds since the epoch, possibly fractional).
func numericDate(v any) (time.Time, error) {
	var f float64
	switch x := v.(type) {
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return time.Time{}, fmt.Errorf("not a number: %q", x)
		}
	case float64:
		f = x
	default:
		return time.Time{}, fmt.Errorf("must be a number of seconds")
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("out of range: %v", f)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// NewToken builds a token from claims that are taken as verified by the named providers. It is
// for tools and tests (portcullis policy test), never for requests: those go through Verify.
func NewToken(providers []string, claims map[string]any) (*Token, error) {
	// Round-trip through JSON so numbers are json.Number as in verified tokens, whatever the
	// caller decoded them as.
	b, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("jwt: claims: %w", err)
	}
	raw, err := decodeClaims(b)
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	r, err := parseRegistered(raw)
	if err != nil {
		return nil, fmt.Errorf("jwt: claims: %w", err)
	}
	ps := slices.Clone(providers)
	for i, p := range ps {
		if !strings.Contains(p, "/") {
			ps[i] = model.DefaultNamespace + "/" + p
		}
	}
	slices.Sort(ps)
	return &Token{
		Providers: slices.Compact(ps),
		Issuer:    r.issuer, Subject: r.subject, ID: r.id, Audience: r.audience,
		Expiry: r.expiry, NotBefore: r.notBefore, IssuedAt: r.issuedAt,
		Claims: NewClaims(raw),
	}, nil
}
