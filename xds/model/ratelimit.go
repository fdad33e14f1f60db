package model

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MinFillInterval is the shortest token-bucket fill interval: Envoy refuses shorter ones
// (envoy#9354).
const MinFillInterval = 50 * time.Millisecond

// MaxTrustedProxyHops bounds RateLimitPolicySpec.TrustedProxyHops.
const MaxTrustedProxyHops = 10

// RateLimitPolicyDoc limits the request rate a service's proxies accept: each proxy with its own
// buckets (Local limits, Envoy's local rate limit), or all of them sharing buckets in Redis (Global
// limits, through the rate limit service).
type RateLimitPolicyDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta          `json:"metadata"`
	Spec     RateLimitPolicySpec `json:"spec"`
}

// RateLimitPolicySpec holds the limits of one service.
type RateLimitPolicySpec struct {
	// Selector picks the service whose inbound traffic is limited.
	Selector Selector `json:"selector"`
	// FailureMode is what the policy's Global limits do when the rate limit service or its Redis
	// cannot answer: OPEN (default) lets requests through, CLOSED answers 503. Only for policies
	// with Global limits.
	FailureMode FailureMode `json:"failureMode,omitempty"`
	// TrustedProxyHops is how many proxies in front of the service's proxies append to
	// X-Forwarded-For and are trusted: the client IP of limits keyed on it is the address that
	// many entries from the right of X-Forwarded-For; 0 (default) takes the connection's peer
	// and ignores the header. Only for policies with limits keyed on jwtClaim or clientIP.
	// +kubebuilder:validation:Maximum=10
	TrustedProxyHops uint32 `json:"trustedProxyHops,omitempty"`
	// Limits; a request is counted against every limit it matches.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Limits []RateLimit `json:"limits"`
}

// RateLimitScope says where a limit's buckets live.
// +kubebuilder:validation:Enum=Local;Global
type RateLimitScope string

const (
	// ScopeLocal gives every proxy of the service its own buckets (the default).
	ScopeLocal RateLimitScope = "Local"
	// ScopeGlobal shares the buckets across every proxy of the service, in Redis.
	ScopeGlobal RateLimitScope = "Global"
)

// RateLimit is one token bucket, for the whole service or one path prefix, optionally one
// bucket per distinct value of a header, calling principal, verified JWT claim or client IP.
type RateLimit struct {
	// Name identifies the limit in metrics and response headers.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Scope is Local (default: each proxy its own buckets) or Global (one set of buckets for all
	// the service's proxies, in Redis).
	Scope RateLimitScope `json:"scope,omitempty"`
	// PathPrefix restricts the limit to a route; the whole service unless set.
	// +kubebuilder:validation:Pattern=`^/`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Bucket is the token bucket.
	Bucket TokenBucket `json:"bucket"`
	// By splits the limit into one bucket per distinct value; without it the limit is shared by
	// all callers.
	By *RateLimitKey `json:"by,omitempty"`
}

// TokenBucket holds MaxTokens and gains TokensPerFill every FillInterval.
// +kubebuilder:validation:XValidation:rule="!has(self.tokensPerFill) || self.tokensPerFill <= self.maxTokens",message="tokensPerFill must not exceed maxTokens"
type TokenBucket struct {
	// +kubebuilder:validation:Minimum=1
	MaxTokens uint32 `json:"maxTokens"`
	// TokensPerFill defaults to MaxTokens.
	TokensPerFill uint32 `json:"tokensPerFill,omitempty"`
	// FillInterval is at least 50ms.
	FillInterval Duration `json:"fillInterval"`
}

// RateLimitKey chooses what splits a limit into per-value buckets: exactly one of Header,
// SourcePrincipal, JWTClaim, APIKey, ClientIP.
// +kubebuilder:validation:XValidation:rule="(has(self.header) ? 1 : 0) + (has(self.sourcePrincipal) && self.sourcePrincipal ? 1 : 0) + (has(self.jwtClaim) ? 1 : 0) + (has(self.apiKey) && self.apiKey ? 1 : 0) + (has(self.clientIP) && self.clientIP ? 1 : 0) == 1",message="needs exactly one of header, sourcePrincipal, jwtClaim, apiKey or clientIP"
type RateLimitKey struct {
	// Header name whose value selects the bucket; requests without it share one bucket. A client
	// chooses its headers: use it to split traffic, never to tell callers apart.
	Header string `json:"header,omitempty"`
	// SourcePrincipal gives every calling SPIFFE ID (from its mTLS certificate) its own bucket.
	SourcePrincipal bool `json:"sourcePrincipal,omitempty"`
	// JWTClaim gives every value of this claim of the verified token its own bucket (a dot path
	// as policies address claims, e.g. "sub" or "org.tenant"); requests without a verified token
	// carrying it get one bucket per client IP. Counted after authorization.
	// +kubebuilder:validation:MaxLength=256
	JWTClaim string `json:"jwtClaim,omitempty"`
	// APIKey gives every identity of a verified API key its own bucket (all the keys of one
	// identity share it, so rotating a key does not reset the limit); requests without a
	// verified key get one bucket per client IP. Counted after authorization.
	APIKey bool `json:"apiKey,omitempty"`
	// ClientIP gives every client address its own bucket (spec.trustedProxyHops says how it is
	// found). Counted after authorization.
	ClientIP bool `json:"clientIP,omitempty"`
	// MaxKeys bounds how many distinct buckets each proxy tracks for a Local limit. 1000 unless
	// set. Global buckets are Redis keys that expire once full again.
	// +kubebuilder:validation:Maximum=100000
	MaxKeys uint32 `json:"maxKeys,omitempty"`
}

// GetKind implements Object.
func (d *RateLimitPolicyDoc) GetKind() string { return KindRateLimitPolicy }

// GetMeta implements Object.
func (d *RateLimitPolicyDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the RateLimitPolicy document on its own.
func (d *RateLimitPolicyDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	s, p := &d.Spec, Path("spec")
	validateDNSLabel(&errs, p.Field("selector").Field("service"), s.Selector.Service)
	if len(s.Limits) == 0 {
		errs.Addf(p.Field("limits"), "at least one limit is required")
	}
	names := map[string]bool{}
	global, clientIP := false, false
	for i, l := range s.Limits {
		lp := p.Field("limits").Index(i)
		validateDNSLabel(&errs, lp.Field("name"), l.Name)
		if names[l.Name] {
			errs.Addf(lp.Field("name"), "duplicate limit name %q", l.Name)
		}
		names[l.Name] = true
		switch l.Scope {
		case "", ScopeLocal:
		case ScopeGlobal:
			global = true
		default:
			hint := ""
			for _, v := range []RateLimitScope{ScopeLocal, ScopeGlobal} {
				if strings.EqualFold(string(l.Scope), string(v)) {
					hint = fmt.Sprintf(" (did you mean %q?)", v)
				}
			}
			errs.Addf(lp.Field("scope"), "must be Local or Global, not %q%s", l.Scope, hint)
		}
		if l.PathPrefix != "" {
			validatePathPattern(&errs, lp.Field("pathPrefix"), l.PathPrefix)
		}
		bp := lp.Field("bucket")
		if l.Bucket.MaxTokens == 0 {
			errs.Addf(bp.Field("maxTokens"), "must be at least 1")
		}
		if l.Bucket.TokensPerFill > l.Bucket.MaxTokens {
			errs.Addf(bp.Field("tokensPerFill"), "must not exceed maxTokens (%d)", l.Bucket.MaxTokens)
		}
		iv := l.Bucket.FillInterval.Duration
		if iv < MinFillInterval {
			errs.Addf(bp.Field("fillInterval"), "must be at least %s (Envoy refuses shorter intervals), not %s", MinFillInterval, iv)
		} else if l.Scope == ScopeGlobal && iv%time.Millisecond != 0 {
			errs.Addf(bp.Field("fillInterval"), "must be a whole number of milliseconds for a Global limit, not %s", iv)
		}
		if k := l.By; k != nil {
			kp := lp.Field("by")
			if n := k.count(); n != 1 {
				errs.Addf(kp, "needs exactly one of header, sourcePrincipal, jwtClaim, apiKey or clientIP")
			}
			if k.Header != "" && !isHeaderName(k.Header) {
				errs.Addf(kp.Field("header"), "%q is not a valid header name", k.Header)
			}
			if k.JWTClaim != "" {
				validateRateLimitClaim(&errs, kp.Field("jwtClaim"), k.JWTClaim)
			}
			clientIP = clientIP || k.JWTClaim != "" || k.APIKey || k.ClientIP
			if k.MaxKeys > 100000 {
				errs.Addf(kp.Field("maxKeys"), "must be at most 100000")
			}
			if k.MaxKeys != 0 && l.Scope == ScopeGlobal {
				errs.Addf(kp.Field("maxKeys"), "applies to Local limits only: a Global limit's buckets are Redis keys, which expire once full again")
			}
		}
	}
	switch s.FailureMode {
	case "":
	case FailOpen, FailClosed:
		if !global {
			errs.Addf(p.Field("failureMode"), "applies to Global limits only, and this policy has none")
		}
	default:
		errs.Addf(p.Field("failureMode"), "must be OPEN or CLOSED, not %q", s.FailureMode)
	}
	if s.TrustedProxyHops > MaxTrustedProxyHops {
		errs.Addf(p.Field("trustedProxyHops"), "must be at most %d, not %d", MaxTrustedProxyHops, s.TrustedProxyHops)
	} else if s.TrustedProxyHops > 0 && !clientIP {
		errs.Addf(p.Field("trustedProxyHops"), "applies to limits keyed on jwtClaim, apiKey or clientIP, and this policy has none")
	}
	return errs
}

func (k *RateLimitKey) count() int {
	n := 0
	for _, set := range []bool{k.Header != "", k.SourcePrincipal, k.JWTClaim != "", k.APIKey, k.ClientIP} {
		if set {
			n++
		}
	}
	return n
}

// validateRateLimitClaim checks a claim path as policies' claim tests do; a comma is refused too,
// since it separates the keys of a route (ContextKeyRateLimit).
func validateRateLimitClaim(errs *FieldErrors, p Path, claim string) {
	switch {
	case strings.HasPrefix(claim, ".") || strings.HasSuffix(claim, ".") || strings.Contains(claim, ".."):
		errs.Addf(p, "must be a dot-separated claim path like \"sub\" or \"org.tenant\", not %q", claim)
	case strings.ContainsAny(claim, ", \t\r\n"):
		errs.Addf(p, "must not contain commas or white space, not %q", claim)
	}
}

func (d *RateLimitPolicyDoc) setDefaults() {
	for i := range d.Spec.Limits {
		l := &d.Spec.Limits[i]
		if l.Scope == "" {
			l.Scope = ScopeLocal
		}
		if l.Bucket.TokensPerFill == 0 {
			l.Bucket.TokensPerFill = l.Bucket.MaxTokens
		}
		if l.By != nil && l.By.MaxKeys == 0 && l.Scope == ScopeLocal {
			l.By.MaxKeys = 1000
		}
		if l.Scope == ScopeGlobal && d.Spec.FailureMode == "" {
			d.Spec.FailureMode = FailOpen
		}
	}
}

// Verified reports whether the limit keys on an attribute that authorization verifies (a JWT
// claim, an API key's identity, the client IP), and is therefore counted after the decision.
func (l *RateLimit) Verified() bool {
	return l.By != nil && (l.By.JWTClaim != "" || l.By.APIKey || l.By.ClientIP)
}

// ResolvedRateLimit is one limit of a service with the settings of the policy it comes from.
type ResolvedRateLimit struct {
	RateLimit
	// FailureMode of a Global limit's policy (OPEN unless set).
	FailureMode FailureMode
	// TrustedProxyHops of the limit's policy.
	TrustedProxyHops uint32
}

// VerifiedKey is the verified attribute a limit keys on, as the translator asks the
// authorization service for it (ContextKeyRateLimit) and finds it in the decision's dynamic
// metadata (MetadataVerified). Its text is "<kind>:<hops>[:<argument>]": "jwtClaim:0:sub",
// "apiKey:0", "clientIP:1".
func (l *ResolvedRateLimit) VerifiedKey() VerifiedKey {
	switch {
	case l.By == nil:
	case l.By.JWTClaim != "":
		return VerifiedKey{Kind: VerifiedJWTClaim, Hops: l.TrustedProxyHops, Arg: l.By.JWTClaim}
	case l.By.APIKey:
		return VerifiedKey{Kind: VerifiedAPIKey, Hops: l.TrustedProxyHops}
	case l.By.ClientIP:
		return VerifiedKey{Kind: VerifiedClientIP, Hops: l.TrustedProxyHops}
	}
	return VerifiedKey{}
}

// Kinds of VerifiedKey.
const (
	// VerifiedJWTClaim is a claim of the verified token; its value is "jwt:<quoted issuer><value>",
	// or, without a verified token carrying the claim as one value, the client IP's.
	VerifiedJWTClaim = "jwtClaim"
	// VerifiedAPIKey is the identity of the verified API key; its value is
	// "apikey:<quoted provider><identity>", or, without a verified key, the client IP's.
	VerifiedAPIKey = "apiKey"
	// VerifiedClientIP is the client address; its value is "ip:<address>".
	VerifiedClientIP = "clientIP"
)

// VerifiedKey names one verified attribute a rate limit keys on.
type VerifiedKey struct {
	Kind string
	// Hops is the number of trusted proxy hops for finding the client IP (the value itself for
	// clientIP, the fallback for the others).
	Hops uint32
	// Arg is the claim path of a jwtClaim key.
	Arg string
}

func (k VerifiedKey) String() string {
	s := k.Kind + ":" + strconv.FormatUint(uint64(k.Hops), 10)
	if k.Arg != "" {
		s += ":" + k.Arg
	}
	return s
}

// IsZero reports whether k names nothing (a limit not keyed on a verified attribute).
func (k VerifiedKey) IsZero() bool { return k.Kind == "" }

// ParseVerifiedKey parses the text of a VerifiedKey.
func ParseVerifiedKey(s string) (VerifiedKey, error) {
	kind, rest, _ := strings.Cut(s, ":")
	hops, arg, _ := strings.Cut(rest, ":")
	n, err := strconv.ParseUint(hops, 10, 32)
	if err != nil || n > MaxTrustedProxyHops {
		return VerifiedKey{}, fmt.Errorf("rate limit key %q: hops must be 0 to %d", s, MaxTrustedProxyHops)
	}
	k := VerifiedKey{Kind: kind, Hops: uint32(n), Arg: arg}
	switch {
	case kind == VerifiedJWTClaim && arg != "":
	case (kind == VerifiedClientIP || kind == VerifiedAPIKey) && arg == "":
	default:
		return VerifiedKey{}, fmt.Errorf("rate limit key %q: want jwtClaim:<hops>:<claim>, apiKey:<hops> or clientIP:<hops>", s)
	}
	return k, nil
}

// Descriptor entries of a Global limit that the translator generates and the rate limit
// service reads. Every descriptor starts with the limit's name and its bucket, so the service
// needs no copy of the documents and a changed limit takes effect with the route carrying it.
const (
	// RateLimitEntryLimit is the limit's name.
	RateLimitEntryLimit = "limit"
	// RateLimitEntryBucket is the limit's bucket (TokenBucket.Entry).
	RateLimitEntryBucket = "bucket"
)

// Entry is the bucket as a descriptor entry value: "<maxTokens>/<tokensPerFill>/<fillInterval in ms>".
func (b TokenBucket) Entry() string {
	per := b.TokensPerFill
	if per == 0 {
		per = b.MaxTokens
	}
	return strconv.FormatUint(uint64(b.MaxTokens), 10) + "/" + strconv.FormatUint(uint64(per), 10) + "/" +
		strconv.FormatInt(b.FillInterval.Milliseconds(), 10)
}

// ParseBucketEntry parses TokenBucket.Entry.
func ParseBucketEntry(s string) (TokenBucket, error) {
	parts := strings.Split(s, "/")
	if len(parts) == 3 {
		most, err1 := strconv.ParseUint(parts[0], 10, 32)
		per, err2 := strconv.ParseUint(parts[1], 10, 32)
		ms, err3 := strconv.ParseUint(parts[2], 10, 32)
		if err1 == nil && err2 == nil && err3 == nil && most > 0 && per > 0 && per <= most && ms > 0 {
			return TokenBucket{MaxTokens: uint32(most), TokensPerFill: uint32(per), FillInterval: Duration{time.Duration(ms) * time.Millisecond}}, nil
		}
	}
	return TokenBucket{}, fmt.Errorf("bucket %q: want <maxTokens>/<tokensPerFill>/<fillInterval ms>, each at least 1, tokensPerFill at most maxTokens", s)
}
