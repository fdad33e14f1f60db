package model

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Action is what a matching authorization policy does.
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT
type Action string

// The actions: allow the request, deny it, or let it through and record the match.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
	ActionAudit Action = "AUDIT"
)

// AuthorizationPolicyDoc is an ABAC (rules) and/or PBAC (Rego) policy for a service or the mesh.
type AuthorizationPolicyDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta              `json:"metadata"`
	Spec     AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec says to which requests a policy applies and what it does with them.
// A policy matches a request when any of its rules matches (or its Rego module says so); see
// docs/policies.md for how policies combine.
// +kubebuilder:validation:XValidation:rule="(has(self.rules) && size(self.rules) > 0) || has(self.rego)",message="a policy needs rules or a rego module"
type AuthorizationPolicySpec struct {
	// Selector picks the destination service, in the policy's namespace. Without one the policy
	// applies to every service of its namespace, or of the mesh when it is in the root namespace.
	Selector *Selector `json:"selector,omitempty"`
	// Action is ALLOW, DENY or AUDIT.
	Action Action `json:"action"`
	// DryRun evaluates, logs and traces the policy without letting it change the decision.
	DryRun bool `json:"dryRun,omitempty"`
	// Rules; a request matches the policy when it matches any rule.
	// +kubebuilder:validation:MaxItems=64
	Rules []Rule `json:"rules,omitempty"`
	// Rego is an optional OPA (v1 syntax) module; see docs/policies.md for its contract.
	Rego *RegoPolicy `json:"rego,omitempty"`
}

// Selector picks the services a policy applies to.
type Selector struct {
	// Service is the name of a Service in the policy's namespace.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`
}

// RegoPolicy is a policy module evaluated with the same input document as the ABAC rules.
//
// The contract (docs/policies.md): the module is OPA v1 Rego with any package name; it must
// define a boolean rule `match`, true when the policy applies to the request (its action then
// takes effect like that of a matching rule), and may define strings `reason` and `rule` that the
// decision reports. It sees the attributes as `input` (the attribute paths below, as JSON) and no
// data; network builtins such as http.send are not available.
type RegoPolicy struct {
	// Module is the Rego source.
	// +kubebuilder:validation:MinLength=1
	Module string `json:"module"`
}

// Rule matches a request when its from, to and when parts all match (each part that is given).
type Rule struct {
	// Name identifies the rule in decisions, logs and traces; "rules[<i>]" unless set.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`
	// From matches the caller.
	From *Source `json:"from,omitempty"`
	// To matches the operation.
	To *Operation `json:"to,omitempty"`
	// When lists further conditions; all must hold.
	// +kubebuilder:validation:MaxItems=16
	When []Condition `json:"when,omitempty"`
}

// Source matches the calling workload and its end user. Every list that is given must match.
type Source struct {
	// Principals: SPIFFE IDs, exact or with one "*" at the start or end; "*" alone is any
	// authenticated workload.
	Principals    []string `json:"principals,omitempty"`
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// Namespaces of the calling workload.
	Namespaces    []string `json:"namespaces,omitempty"`
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	// JWT requires a verified end-user token, optionally with claims.
	JWT *JWTRequirement `json:"jwt,omitempty"`
	// APIKey requires a verified API key, optionally of some identities and with attributes.
	APIKey *APIKeyRequirement `json:"apiKey,omitempty"`
}

// APIKeyRequirement requires an API key verified by one of the named providers.
type APIKeyRequirement struct {
	// Providers are APIKeyProvider names, each found in the policy's namespace or else in the
	// root namespace. Empty accepts a key of any provider that acts on the destination: those
	// of its namespace and the root namespace.
	Providers []string `json:"providers,omitempty"`
	// Identities: the key's identity must be one of them; any identity unless set.
	Identities []string `json:"identities,omitempty"`
	// Attributes of the key that must all hold, tested like JWT claims
	// ({claim: scopes, contains: export}).
	// +kubebuilder:validation:MaxItems=16
	Attributes []ClaimMatch `json:"attributes,omitempty"`
}

// JWTRequirement requires a token verified by one of the named providers.
type JWTRequirement struct {
	// Providers are JWTProvider names, each found in the policy's namespace or else in the root
	// namespace; any one may have verified the token. Empty accepts a token from any provider
	// that verifies tokens for the destination: those of its namespace and the root namespace.
	Providers []string `json:"providers,omitempty"`
	// Claims that must all hold.
	// +kubebuilder:validation:MaxItems=16
	Claims []ClaimMatch `json:"claims,omitempty"`
}

// ClaimMatch tests one claim, addressed by a dot path such as "realm_access.roles".
// +kubebuilder:validation:XValidation:rule="(has(self.equals) ? 1 : 0) + (has(self.__in__) ? 1 : 0) + (has(self.contains) ? 1 : 0) + (has(self.matches) ? 1 : 0) == 1",message="needs exactly one of equals, in, contains or matches"
type ClaimMatch struct {
	// +kubebuilder:validation:MinLength=1
	Claim      string `json:"claim"`
	ValueMatch `json:",inline"`
}

// ValueMatch is exactly one operator.
//
//   - equals: the value (or, for a list, any element) equals the string;
//   - in: the value (or any element) is one of the strings;
//   - contains: a list has the element; a string has it as a space-separated word (OAuth scope);
//   - matches: the value (or any element) fully matches the RE2 regular expression.
//
// Numbers and booleans compare in their JSON spelling ("42", "true").
type ValueMatch struct {
	Equals   *string  `json:"equals,omitempty"`
	In       []string `json:"in,omitempty"`
	Contains *string  `json:"contains,omitempty"`
	Matches  *string  `json:"matches,omitempty"`
}

// Operation matches what is being asked for. Every list that is given must match.
type Operation struct {
	// Methods are HTTP methods, upper case.
	// +kubebuilder:validation:items:Pattern=`^[A-Z]+$`
	Methods []string `json:"methods,omitempty"`
	// +kubebuilder:validation:items:Pattern=`^[A-Z]+$`
	NotMethods []string `json:"notMethods,omitempty"`
	// Paths: exact ("/healthz"), prefix ("/api/*": "/api/" and everything below it), or glob:
	// "*" as a whole segment is one segment ("/users/*/orders"), "*" inside a segment is any
	// characters but "/" ("/files/*.pdf"), "**" as a whole segment is any number of segments
	// ("/files/**" also matches "/files"). Requests are matched after normalisation.
	// +kubebuilder:validation:items:Pattern=`^/`
	Paths []string `json:"paths,omitempty"`
	// +kubebuilder:validation:items:Pattern=`^/`
	NotPaths []string `json:"notPaths,omitempty"`
	// Ports: the destination service port the request was sent to (destination.port: the
	// listener's `port` context extension, else the port the request arrived on).
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []uint32 `json:"ports,omitempty"`
	// Hosts: exact, "*.example.com" or "example.*"; compared without the port.
	Hosts []string `json:"hosts,omitempty"`
}

// Condition is exactly one of: an attribute test, a source-IP test, or a time window.
// +kubebuilder:validation:XValidation:rule="(has(self.attribute) ? 1 : 0) + (has(self.header) ? 1 : 0) + (has(self.sourceIPs) || has(self.notSourceIPs) ? 1 : 0) + (has(self.time) ? 1 : 0) == 1",message="a condition needs exactly one of attribute, header, sourceIPs/notSourceIPs or time"
// +kubebuilder:validation:XValidation:rule="(has(self.attribute) || has(self.header)) == ((has(self.equals) ? 1 : 0) + (has(self.__in__) ? 1 : 0) + (has(self.contains) ? 1 : 0) + (has(self.matches) ? 1 : 0) == 1)",message="attribute and header conditions need exactly one of equals, in, contains or matches; other conditions take none"
type Condition struct {
	// Attribute is an attribute path (see docs/policies.md), tested with one operator.
	Attribute  string `json:"attribute,omitempty"`
	ValueMatch `json:",inline"`
	// Header is shorthand for attribute "request.headers.<lower-case name>".
	Header string `json:"header,omitempty"`
	// SourceIPs: the peer address is in one of the CIDRs (or equals one of the IPs).
	SourceIPs    []string `json:"sourceIPs,omitempty"`
	NotSourceIPs []string `json:"notSourceIPs,omitempty"`
	// Time: the request time is in the window.
	Time *TimeWindow `json:"time,omitempty"`
}

// TimeWindow is a daily window on some weekdays, in a named time zone. An end before the start
// wraps past midnight ("22:00"–"06:00").
// +kubebuilder:validation:XValidation:rule="self.start != self.end",message="end must differ from start (an empty window never matches)"
type TimeWindow struct {
	// TimeZone is an IANA name such as "Europe/Berlin". UTC unless set.
	TimeZone string `json:"timeZone,omitempty"`
	// Days are Mon, Tue, Wed, Thu, Fri, Sat, Sun; all days unless set. A window that wraps
	// past midnight belongs to the day it starts on.
	// +kubebuilder:validation:MaxItems=7
	// +kubebuilder:validation:items:Enum=Mon;Tue;Wed;Thu;Fri;Sat;Sun
	Days []string `json:"days,omitempty"`
	// Start and End are "HH:MM" (24h); the window includes Start and excludes End.
	// +kubebuilder:validation:MaxLength=5
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`
	// +kubebuilder:validation:MaxLength=5
	// +kubebuilder:validation:Pattern=`^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$`
	End string `json:"end"`
}

// Weekdays maps the names TimeWindow.Days accepts.
var Weekdays = map[string]time.Weekday{
	"Sun": time.Sunday, "Mon": time.Monday, "Tue": time.Tuesday, "Wed": time.Wednesday,
	"Thu": time.Thursday, "Fri": time.Friday, "Sat": time.Saturday,
}

// RuleName returns the rule's name, or its position when it has none.
func (r *Rule) RuleName(i int) string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("rules[%d]", i)
}

// GetKind implements Object.
func (d *AuthorizationPolicyDoc) GetKind() string { return KindAuthorizationPolicy }

// GetMeta implements Object.
func (d *AuthorizationPolicyDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the policy on its own: syntax of every pattern, operator and attribute.
// Rego compiles in authz/policy, which sources call before publishing.
func (d *AuthorizationPolicyDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	s, p := &d.Spec, Path("spec")
	if s.Selector != nil {
		validateDNSLabel(&errs, p.Field("selector").Field("service"), s.Selector.Service)
	}
	switch s.Action {
	case ActionAllow, ActionDeny, ActionAudit:
	case "":
		errs.Addf(p.Field("action"), "required (ALLOW, DENY or AUDIT)")
	default:
		errs.Addf(p.Field("action"), "must be ALLOW, DENY or AUDIT, not %q", s.Action)
	}
	if len(s.Rules) == 0 && s.Rego == nil {
		errs.Addf(p.Field("rules"), "a policy needs rules or a rego module")
	}
	if s.Rego != nil && strings.TrimSpace(s.Rego.Module) == "" {
		errs.Addf(p.Field("rego").Field("module"), "required")
	}
	names := map[string]bool{}
	for i := range s.Rules {
		r, rp := &s.Rules[i], p.Field("rules").Index(i)
		if r.Name != "" {
			validateDNSLabel(&errs, rp.Field("name"), r.Name)
			if names[r.Name] {
				errs.Addf(rp.Field("name"), "duplicate rule name %q", r.Name)
			}
			names[r.Name] = true
		}
		r.validate(&errs, rp)
	}
	return errs
}

func (d *AuthorizationPolicyDoc) setDefaults() {}

func (r *Rule) validate(errs *FieldErrors, p Path) {
	if r.From != nil {
		fp := p.Field("from")
		for i, pr := range r.From.Principals {
			validatePrincipalPattern(errs, fp.Field("principals").Index(i), pr)
		}
		for i, pr := range r.From.NotPrincipals {
			validatePrincipalPattern(errs, fp.Field("notPrincipals").Index(i), pr)
		}
		for i, ns := range r.From.Namespaces {
			validateDNSLabel(errs, fp.Field("namespaces").Index(i), ns)
		}
		for i, ns := range r.From.NotNamespaces {
			validateDNSLabel(errs, fp.Field("notNamespaces").Index(i), ns)
		}
		if j := r.From.JWT; j != nil {
			jp := fp.Field("jwt")
			for i, name := range j.Providers {
				validateDNSLabel(errs, jp.Field("providers").Index(i), name)
			}
			for i, c := range j.Claims {
				cp := jp.Field("claims").Index(i)
				if c.Claim == "" || strings.HasPrefix(c.Claim, ".") || strings.HasSuffix(c.Claim, ".") || strings.Contains(c.Claim, "..") {
					errs.Addf(cp.Field("claim"), "must be a dot-separated claim path like \"realm_access.roles\", not %q", c.Claim)
				}
				c.ValueMatch.validate(errs, cp, true)
			}
		}
		if k := r.From.APIKey; k != nil {
			kp := fp.Field("apiKey")
			for i, name := range k.Providers {
				validateDNSLabel(errs, kp.Field("providers").Index(i), name)
			}
			for i, id := range k.Identities {
				if id == "" {
					errs.Addf(kp.Field("identities").Index(i), "must not be empty")
				}
			}
			for i, c := range k.Attributes {
				cp := kp.Field("attributes").Index(i)
				if !attributeName.MatchString(c.Claim) {
					errs.Addf(cp.Field("claim"), "must be an attribute name (letters, digits, '_' and '-'), not %q", c.Claim)
				}
				c.ValueMatch.validate(errs, cp, true)
			}
		}
	}
	if t := r.To; t != nil {
		tp := p.Field("to")
		for i, m := range t.Methods {
			validateMethod(errs, tp.Field("methods").Index(i), m)
		}
		for i, m := range t.NotMethods {
			validateMethod(errs, tp.Field("notMethods").Index(i), m)
		}
		for i, path := range t.Paths {
			validatePathPattern(errs, tp.Field("paths").Index(i), path)
		}
		for i, path := range t.NotPaths {
			validatePathPattern(errs, tp.Field("notPaths").Index(i), path)
		}
		for i, port := range t.Ports {
			validatePort(errs, tp.Field("ports").Index(i), port)
		}
		for i, h := range t.Hosts {
			validateHostPattern(errs, tp.Field("hosts").Index(i), h)
		}
	}
	for i := range r.When {
		r.When[i].validate(errs, p.Field("when").Index(i))
	}
}

// HeaderName is the lower-case name of the request header a header or attribute condition
// tests, or "" for any other condition.
func (c *Condition) HeaderName() string {
	if c.Header != "" {
		return strings.ToLower(c.Header)
	}
	if h, ok := strings.CutPrefix(c.Attribute, "request.headers."); ok {
		return strings.ToLower(h)
	}
	return ""
}

func (c *Condition) validate(errs *FieldErrors, p Path) {
	kinds := 0
	if c.Attribute != "" {
		kinds++
		if !ValidAttributePath(c.Attribute) {
			errs.Addf(p.Field("attribute"), "unknown attribute %q (see docs/policies.md for the attribute paths)", c.Attribute)
		}
	}
	if c.Header != "" {
		kinds++
		if !isHeaderName(c.Header) {
			errs.Addf(p.Field("header"), "%q is not a valid header name", c.Header)
		}
	}
	if c.Attribute != "" || c.Header != "" {
		c.ValueMatch.validate(errs, p, true)
	} else {
		c.ValueMatch.validate(errs, p, false)
	}
	if len(c.SourceIPs) > 0 || len(c.NotSourceIPs) > 0 {
		kinds++
	}
	for i, s := range c.SourceIPs {
		validateCIDR(errs, p.Field("sourceIPs").Index(i), s)
	}
	for i, s := range c.NotSourceIPs {
		validateCIDR(errs, p.Field("notSourceIPs").Index(i), s)
	}
	if c.Time != nil {
		kinds++
		c.Time.validate(errs, p.Field("time"))
	}
	if kinds != 1 {
		errs.Addf(p, "a condition needs exactly one of attribute, header, sourceIPs/notSourceIPs or time (%d given)", kinds)
	}
}

// validate checks that exactly one operator is set (when required) and that it is well formed.
// When an operator is not expected at all (required false), any operator is an error.
func (v *ValueMatch) validate(errs *FieldErrors, p Path, required bool) {
	n := 0
	if v.Equals != nil {
		n++
	}
	if v.In != nil {
		n++
		if len(v.In) == 0 {
			errs.Addf(p.Field("in"), "must list at least one value")
		}
	}
	if v.Contains != nil {
		n++
	}
	if v.Matches != nil {
		n++
		if _, err := regexp.Compile(*v.Matches); err != nil {
			errs.Addf(p.Field("matches"), "invalid regular expression: %v", err)
		}
	}
	switch {
	case required && n != 1:
		errs.Addf(p, "needs exactly one of equals, in, contains or matches (%d given)", n)
	case !required && n != 0:
		errs.Addf(p, "equals, in, contains and matches apply only to attribute, header or claim conditions")
	}
}

func (w *TimeWindow) validate(errs *FieldErrors, p Path) {
	if w.TimeZone != "" {
		if _, err := time.LoadLocation(w.TimeZone); err != nil {
			errs.Addf(p.Field("timeZone"), "unknown time zone %q", w.TimeZone)
		}
	}
	for i, d := range w.Days {
		if _, ok := Weekdays[d]; !ok {
			errs.Addf(p.Field("days").Index(i), "must be one of Mon, Tue, Wed, Thu, Fri, Sat, Sun, not %q", d)
		}
	}
	start, okStart := ParseClock(w.Start)
	if !okStart {
		errs.Addf(p.Field("start"), "must be a time of day \"HH:MM\" (00:00-23:59), not %q", w.Start)
	}
	end, okEnd := ParseClock(w.End)
	if !okEnd && w.End != "24:00" {
		errs.Addf(p.Field("end"), "must be a time of day \"HH:MM\" (00:00-24:00), not %q", w.End)
	}
	if okStart && okEnd && start == end {
		errs.Addf(p.Field("end"), "must differ from start (an empty window never matches)")
	}
}

// ParseClock parses "HH:MM" into minutes after midnight.
func ParseClock(s string) (int, bool) {
	t, err := time.Parse("15:04", s)
	if err != nil || len(s) != 5 {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}

func validateCIDR(errs *FieldErrors, p Path, s string) {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs.Addf(p, "invalid CIDR %q", s)
		}
	} else if _, err := netip.ParseAddr(s); err != nil {
		errs.Addf(p, "must be an IP or CIDR, not %q", s)
	}
}

func validateMethod(errs *FieldErrors, p Path, m string) {
	if !isHeaderName(m) || strings.ToUpper(m) != m {
		errs.Addf(p, "must be an upper-case HTTP method like \"GET\", not %q", m)
	}
}

// validatePathPattern checks an exact, prefix ("/api/*") or glob ("/a/*/b", "/files/**") path.
func validatePathPattern(errs *FieldErrors, p Path, s string) {
	switch {
	case !strings.HasPrefix(s, "/"):
		errs.Addf(p, "must start with \"/\"")
	case strings.ContainsAny(s, "?#"):
		errs.Addf(p, "must not contain a query or fragment (paths are matched without them)")
	case strings.ContainsFunc(s, func(r rune) bool { return r == '\\' || r < 0x20 || r == 0x7f }):
		errs.Addf(p, "must not contain backslashes or control characters (requests with them are rejected)")
	case strings.Contains(s, "***"):
		errs.Addf(p, "\"***\" is not a pattern: use \"*\" (one segment) or \"**\" (any depth)")
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "." || seg == ".." {
			errs.Addf(p, "must be normalised (no \".\" or \"..\" segments): requests are matched after normalisation")
			break
		}
		if strings.Contains(seg, "**") && seg != "**" && !strings.Contains(seg, "***") {
			errs.Addf(p, "\"**\" must be a whole segment (\"/files/**\"), not part of %q", seg)
			break
		}
	}
	if strings.Contains(s, "//") {
		errs.Addf(p, "must not contain \"//\": requests are matched after normalisation")
	}
}

func validateHostPattern(errs *FieldErrors, p Path, h string) {
	core := strings.TrimSuffix(strings.TrimPrefix(h, "*."), ".*")
	if h == "*" || core == "" || strings.Contains(core, "*") || strings.ContainsAny(core, "/ :") {
		errs.Addf(p, "must be a host name, \"*.suffix\" or \"prefix.*\", without a port, not %q", h)
	}
}

// validatePrincipalPattern checks a SPIFFE ID, optionally with one "*" at the start or end.
func validatePrincipalPattern(errs *FieldErrors, p Path, s string) {
	switch {
	case s == "*":
		return
	case strings.Count(s, "*") > 1 || (strings.Contains(s, "*") && !strings.HasPrefix(s, "*") && !strings.HasSuffix(s, "*")):
		errs.Addf(p, "%q: \"*\" may appear once, at the start or end", s)
	case strings.HasPrefix(s, "*"):
		if !strings.HasPrefix(s[1:], "/") {
			errs.Addf(p, "%q: a suffix pattern must continue with a path, like \"*/sa/frontend\"", s)
		}
	case strings.HasSuffix(s, "*"):
		if !strings.HasPrefix(s, "spiffe://") {
			errs.Addf(p, "%q is not a SPIFFE ID prefix (spiffe://<trust-domain>/...)", s)
		} else if _, err := spiffeid.TrustDomainFromString(strings.SplitN(strings.TrimPrefix(s, "spiffe://"), "/", 2)[0]); err != nil {
			errs.Addf(p, "%q: invalid trust domain: %v", s, err)
		}
	default:
		if _, err := spiffeid.FromString(s); err != nil {
			errs.Addf(p, "%q is not a SPIFFE ID: %v", s, err)
		}
	}
}

// PrincipalTrustDomain returns the trust domain an exact or prefix principal pattern names, or ""
// for patterns that name none ("*", "*/sa/x").
func PrincipalTrustDomain(pattern string) string {
	if !strings.HasPrefix(pattern, "spiffe://") {
		return ""
	}
	return strings.SplitN(strings.TrimPrefix(pattern, "spiffe://"), "/", 2)[0]
}
