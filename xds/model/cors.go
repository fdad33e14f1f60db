package model

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultCORSMethods are the methods a CORS policy allows unless it lists its own.
var DefaultCORSMethods = []string{"GET", "HEAD", "POST"}

// MaxCORSMaxAge bounds CORSPolicy.MaxAge (Firefox's own cap; Chromium caps at 2h).
const MaxCORSMaxAge = 24 * time.Hour

// CORSPolicy is a service's cross-origin resource sharing policy: which browser origins may call
// it, with which methods and headers, and whether with the user's credentials.
// +kubebuilder:validation:XValidation:rule="!has(self.allowCredentials) || !self.allowCredentials || self.allowOrigins.all(o, !o.contains('*'))",message="a wildcard origin is not allowed with allowCredentials: list the origins"
type CORSPolicy struct {
	// AllowOrigins are the origins allowed: exact ("https://app.example.com",
	// "http://localhost:3000"), one DNS label wildcarded ("https://*.example.com"), or "*" alone
	// (any origin). Wildcards are refused with AllowCredentials.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=300
	// +listType=set
	AllowOrigins []string `json:"allowOrigins"`
	// AllowMethods are the methods cross-origin requests may use. GET, HEAD, POST unless set.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	// +listType=set
	AllowMethods []string `json:"allowMethods,omitempty"`
	// AllowHeaders are the request headers cross-origin requests may send beyond the
	// CORS-safelisted ones (e.g. Authorization, Content-Type: application/json).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// ExposeHeaders are the response headers scripts may read beyond the safelisted ones.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// MaxAge is how long browsers may cache a preflight's answer, at most 24h; their default
	// (5s) unless set.
	MaxAge *Duration `json:"maxAge,omitempty"`
	// AllowCredentials lets cross-origin requests carry cookies and HTTP authentication, and
	// scripts read the answers to them. Only with exact origins.
	AllowCredentials bool `json:"allowCredentials,omitempty"`
}

// CORSOrigin is one parsed entry of CORSPolicy.AllowOrigins.
type CORSOrigin struct {
	// Any is "*": every origin.
	Any bool
	// Scheme is http or https.
	Scheme string
	// Host is the host name or IP (IPv6 in brackets), without the wildcard label.
	Host string
	// Wildcard: the origin's host is one more DNS label in front of Host ("*.example.com").
	Wildcard bool
	// Port is the explicit port, "" for the scheme's default.
	Port string
}

// ParseCORSOrigin parses an allowed origin: "*", scheme://host[:port] with scheme http or https,
// a lower-case host, nothing after it; the host's first label may be "*".
func ParseCORSOrigin(s string) (CORSOrigin, error) {
	if s == "*" {
		return CORSOrigin{Any: true}, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return CORSOrigin{}, fmt.Errorf("must be \"*\" or an origin like \"https://app.example.com\" (scheme http or https), not %q", s)
	}
	if strings.ContainsAny(rest, "/?#@") {
		return CORSOrigin{}, fmt.Errorf("an origin is scheme://host[:port] with no path, query or user: %q", s)
	}
	o := CORSOrigin{Scheme: scheme, Host: rest}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		o.Host, o.Port = rest[:i], rest[i+1:]
		if n, err := strconv.Atoi(o.Port); err != nil || n < 1 || n > 65535 || o.Port[0] == '0' {
			return CORSOrigin{}, fmt.Errorf("%q: the port must be a number 1-65535 without leading zeros", s)
		}
	}
	if h, ok := strings.CutPrefix(o.Host, "*."); ok {
		o.Host, o.Wildcard = h, true
		if !strings.Contains(h, ".") {
			return CORSOrigin{}, fmt.Errorf("%q: a wildcard must stand for one label of a domain with at least two more (\"https://*.example.com\")", s)
		}
	}
	if !validOriginHost(o.Host) || (o.Wildcard && strings.HasPrefix(o.Host, "[")) {
		return CORSOrigin{}, fmt.Errorf("%q: the host must be a lower-case DNS name or an IP address, and \"*\" may only be its whole first label", s)
	}
	return o, nil
}

// validOriginHost reports whether h is a lower-case DNS name, an IPv4 address or a bracketed
// IPv6 address, as browsers serialize origins.
func validOriginHost(h string) bool {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		return len(h) > 2 && strings.Trim(h[1:len(h)-1], "0123456789abcdef:.") == ""
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if !dns1123Label.MatchString(label) {
			return false
		}
	}
	return true
}

func (c *CORSPolicy) validate(errs *FieldErrors, p Path) {
	op := p.Field("allowOrigins")
	if len(c.AllowOrigins) == 0 {
		errs.Addf(op, "at least one origin is required")
	}
	seen := map[string]bool{}
	for i, s := range c.AllowOrigins {
		ip := op.Index(i)
		if seen[s] {
			errs.Addf(ip, "duplicate origin %q", s)
		}
		seen[s] = true
		if s == "null" {
			errs.Addf(ip, "\"null\" is the origin of sandboxed documents and local files, which any page can create: it is never allowed")
			continue
		}
		o, err := ParseCORSOrigin(s)
		switch {
		case err != nil:
			errs.Addf(ip, "%v", err)
		case o.Any && len(c.AllowOrigins) > 1:
			errs.Addf(ip, "\"*\" allows every origin: it must be the only one")
		case o.Any && c.AllowCredentials:
			errs.Addf(ip, "a wildcard origin with allowCredentials would let any site act as the signed-in user: list the origins")
		case o.Wildcard && c.AllowCredentials:
			errs.Addf(ip, "a wildcard origin with allowCredentials would let any host it matches act as the signed-in user: list the origins")
		}
	}
	for i, m := range c.AllowMethods {
		if len(m) > 32 {
			errs.Addf(p.Field("allowMethods").Index(i), "is longer than 32 characters")
			continue
		}
		if m == "*" {
			errs.Addf(p.Field("allowMethods").Index(i), "list the methods: \"*\" is refused")
			continue
		}
		validateMethod(errs, p.Field("allowMethods").Index(i), m)
	}
	for _, f := range []struct {
		name  string
		names []string
	}{{"allowHeaders", c.AllowHeaders}, {"exposeHeaders", c.ExposeHeaders}} {
		for i, h := range f.names {
			if len(h) > 256 {
				errs.Addf(p.Field(f.name).Index(i), "is longer than 256 characters")
				continue
			}
			if h == "*" {
				errs.Addf(p.Field(f.name).Index(i), "list the headers: \"*\" is refused")
			} else if !isHeaderName(h) {
				errs.Addf(p.Field(f.name).Index(i), "%q is not a valid header name", h)
			}
		}
	}
	if a := c.MaxAge; a != nil && (a.Duration < time.Second || a.Duration > MaxCORSMaxAge || a.Duration%time.Second != 0) {
		errs.Addf(p.Field("maxAge"), "must be whole seconds between 1s and %s, not %s", MaxCORSMaxAge, a.Duration)
	}
}
