package model

import "time"

// MinFillInterval is the shortest token-bucket fill interval: Envoy refuses shorter ones
// (envoy#9354).
const MinFillInterval = 50 * time.Millisecond

// RateLimitPolicyDoc limits the request rate a service's proxies accept (Envoy's local rate limit:
// each proxy enforces its own buckets).
type RateLimitPolicyDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta          `json:"metadata"`
	Spec     RateLimitPolicySpec `json:"spec"`
}

// RateLimitPolicySpec holds the limits of one service.
type RateLimitPolicySpec struct {
	// Selector picks the service whose inbound traffic is limited.
	Selector Selector `json:"selector"`
	// Limits; a request is counted against every limit it matches.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Limits []RateLimit `json:"limits"`
}

// RateLimit is one token bucket, for the whole service or one path prefix, optionally one
// bucket per distinct value of a header or per calling principal.
type RateLimit struct {
	// Name identifies the limit in metrics and response headers.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// PathPrefix restricts the limit to a route; the whole service unless set.
	// +kubebuilder:validation:Pattern=`^/`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Bucket is the token bucket.
	Bucket TokenBucket `json:"bucket"`
	// By splits the limit into one bucket per distinct value (of a header or the source
	// principal); without it the limit is shared by all callers.
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

// RateLimitKey chooses what splits a limit into per-value buckets: exactly one field.
// +kubebuilder:validation:XValidation:rule="has(self.header) != (has(self.sourcePrincipal) && self.sourcePrincipal)",message="needs exactly one of header or sourcePrincipal"
type RateLimitKey struct {
	// Header name whose value selects the bucket; requests without it share one bucket.
	Header string `json:"header,omitempty"`
	// SourcePrincipal gives every calling SPIFFE ID its own bucket.
	SourcePrincipal bool `json:"sourcePrincipal,omitempty"`
	// MaxKeys bounds how many distinct buckets are tracked. 1000 unless set.
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
	for i, l := range s.Limits {
		lp := p.Field("limits").Index(i)
		validateDNSLabel(&errs, lp.Field("name"), l.Name)
		if names[l.Name] {
			errs.Addf(lp.Field("name"), "duplicate limit name %q", l.Name)
		}
		names[l.Name] = true
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
		if l.Bucket.FillInterval.Duration < MinFillInterval {
			errs.Addf(bp.Field("fillInterval"), "must be at least %s (Envoy refuses shorter intervals), not %s", MinFillInterval, l.Bucket.FillInterval.Duration)
		}
		if k := l.By; k != nil {
			kp := lp.Field("by")
			if (k.Header != "") == k.SourcePrincipal {
				errs.Addf(kp, "needs exactly one of header or sourcePrincipal")
			}
			if k.Header != "" && !isHeaderName(k.Header) {
				errs.Addf(kp.Field("header"), "%q is not a valid header name", k.Header)
			}
			if k.MaxKeys > 100000 {
				errs.Addf(kp.Field("maxKeys"), "must be at most 100000")
			}
		}
	}
	return errs
}

func (d *RateLimitPolicyDoc) setDefaults() {
	for i := range d.Spec.Limits {
		l := &d.Spec.Limits[i]
		if l.Bucket.TokensPerFill == 0 {
			l.Bucket.TokensPerFill = l.Bucket.MaxTokens
		}
		if l.By != nil && l.By.MaxKeys == 0 {
			l.By.MaxKeys = 1000
		}
	}
}
