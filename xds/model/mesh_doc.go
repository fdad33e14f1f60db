package model

import (
	"net"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MTLSMode says whether a workload's inbound listener requires mesh TLS.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type MTLSMode string

const (
	// MTLSStrict accepts only mutual TLS with a certificate from the mesh CA.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive also accepts plaintext, for migrating workloads into the mesh.
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// Decision is an authorization outcome.
// +kubebuilder:validation:Enum=ALLOW;DENY
type Decision string

// The two decisions.
const (
	DecisionAllow Decision = "ALLOW"
	DecisionDeny  Decision = "DENY"
)

// FailureMode says what a proxy does when the authorization service cannot be reached.
// +kubebuilder:validation:Enum=CLOSED;OPEN
type FailureMode string

const (
	// FailClosed denies requests when authorization is unavailable (the default).
	FailClosed FailureMode = "CLOSED"
	// FailOpen lets requests through when authorization is unavailable.
	FailOpen FailureMode = "OPEN"
)

// AuthzMode says whether proxies ask the authorization service about every inbound request.
// +kubebuilder:validation:Enum=ENFORCE;OFF
type AuthzMode string

const (
	// AuthzEnforce authorizes every inbound request with ext_authz (the default).
	AuthzEnforce AuthzMode = "ENFORCE"
	// AuthzOff leaves ext_authz out of every inbound listener: mTLS, SPIFFE ID checks and rate
	// limits stay, but any mesh workload may call any service. An explicit opt-out for
	// benchmarking, or for meshes whose applications authorize requests themselves.
	AuthzOff AuthzMode = "OFF"
)

// AuthzEngine says where the policies of a route are decided.
// +kubebuilder:validation:Enum=auto;extAuthz
type AuthzEngine string

const (
	// EngineExtAuthz sends every request to the authorization service.
	EngineExtAuthz AuthzEngine = "extAuthz"
	// EngineAuto (the default) has Envoy decide, with its RBAC filter, the routes whose policies
	// it can express exactly, and sends the others to the authorization service (docs/policies.md,
	// "Where a policy is decided"); Envoy's decisions reach the same decision log.
	EngineAuto AuthzEngine = "auto"
)

// Defaults of the Mesh document, documented in docs/documents.md.
const (
	DefaultAuthzTimeout         = 250 * time.Millisecond
	DefaultTracingSampling      = 1.0
	DefaultMaxAuthzRequestBytes = 8192
	// DefaultRootNamespace holds the mesh-wide AuthorizationPolicies and JWTProviders unless
	// spec.rootNamespace names another: the namespace the control plane is installed in.
	DefaultRootNamespace = "portcullis-system"
)

// MeshDoc is the one mesh-wide document: trust domain and defaults every proxy shares.
type MeshDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     MeshSpec   `json:"spec"`
}

// MeshSpec holds mesh-wide settings.
type MeshSpec struct {
	// TrustDomain names the SPIFFE trust domain; workload IDs are
	// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[a-z0-9._-]+$`
	TrustDomain string `json:"trustDomain"`
	// RootNamespace is the namespace of the mesh-wide documents: an AuthorizationPolicy without
	// a selector applies to every namespace only there (elsewhere, to its own namespace), and its
	// JWTProviders verify tokens for every destination (elsewhere, for their own namespace's).
	// "portcullis-system" unless set.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	RootNamespace string `json:"rootNamespace,omitempty"`
	// MTLS sets the inbound TLS mode.
	MTLS MTLSSettings `json:"mtls,omitempty"`
	// DefaultDecision applies when no ALLOW policy matches a request. DENY unless set.
	DefaultDecision Decision `json:"defaultDecision,omitempty"`
	// Authz configures how proxies call the authorization service.
	Authz AuthzSettings `json:"authz,omitempty"`
	// Tracing configures the proxies' OpenTelemetry tracing.
	Tracing TracingSettings `json:"tracing,omitempty"`
}

// MTLSSettings configures mesh TLS.
type MTLSSettings struct {
	// Mode is STRICT (default) or PERMISSIVE.
	Mode MTLSMode `json:"mode,omitempty"`
}

// AuthzSettings configures the proxies' ext_authz filter.
type AuthzSettings struct {
	// Mode is ENFORCE (default: every inbound request is authorized) or OFF (ext_authz is
	// turned off on every route; AuthorizationPolicies are not applied).
	Mode AuthzMode `json:"mode,omitempty"`
	// Engine is auto (default: Envoy decides the routes whose policies its RBAC filter expresses
	// exactly, the authorization service the others) or extAuthz (the authorization service
	// decides every request).
	Engine AuthzEngine `json:"engine,omitempty"`
	// FailureMode is CLOSED (default: deny when authorization is unreachable) or OPEN.
	FailureMode FailureMode `json:"failureMode,omitempty"`
	// Timeout bounds each authorization call. 250ms unless set.
	Timeout *Duration `json:"timeout,omitempty"`
	// MaxRequestBytes is how much of a request body proxies buffer and send to authorization;
	// 0 sends no body.
	// +kubebuilder:validation:Maximum=1048576
	MaxRequestBytes uint32 `json:"maxRequestBytes,omitempty"`
}

// TracingSettings configures OpenTelemetry tracing in proxies and the control plane.
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || has(self.collector)",message="collector is required when tracing is enabled"
type TracingSettings struct {
	// Enabled turns tracing on.
	Enabled bool `json:"enabled,omitempty"`
	// Collector is the OTLP gRPC collector address, host:port.
	Collector string `json:"collector,omitempty"`
	// SamplingPercent is the share of requests traced, 0 to 100. 1 unless set: tracing every
	// request costs the authorization service a third of its throughput (docs/benchmarks.md);
	// the decision log has every decision either way.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	SamplingPercent *float64 `json:"samplingPercent,omitempty"`
}

// GetKind implements Object.
func (d *MeshDoc) GetKind() string { return KindMesh }

// GetMeta implements Object.
func (d *MeshDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the Mesh document.
func (d *MeshDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, false)
	s, p := &d.Spec, Path("spec")
	if s.TrustDomain == "" {
		errs.Addf(p.Field("trustDomain"), "required")
	} else if td, err := spiffeid.TrustDomainFromString(s.TrustDomain); err != nil {
		errs.Addf(p.Field("trustDomain"), "invalid trust domain %q: %v", s.TrustDomain, err)
	} else if td.Name() != s.TrustDomain {
		errs.Addf(p.Field("trustDomain"), "must be a bare trust domain name like %q, not %q", td.Name(), s.TrustDomain)
	}
	if s.RootNamespace != "" {
		validateDNSLabel(&errs, p.Field("rootNamespace"), s.RootNamespace)
	}
	switch s.MTLS.Mode {
	case "", MTLSStrict, MTLSPermissive:
	default:
		errs.Addf(p.Field("mtls").Field("mode"), "must be STRICT or PERMISSIVE, not %q", s.MTLS.Mode)
	}
	switch s.DefaultDecision {
	case "", DecisionAllow, DecisionDeny:
	default:
		errs.Addf(p.Field("defaultDecision"), "must be ALLOW or DENY, not %q", s.DefaultDecision)
	}
	ap := p.Field("authz")
	switch s.Authz.Mode {
	case "", AuthzEnforce, AuthzOff:
	default:
		errs.Addf(ap.Field("mode"), "must be ENFORCE or OFF, not %q", s.Authz.Mode)
	}
	switch s.Authz.Engine {
	case "", EngineAuto, EngineExtAuthz:
	default:
		errs.Addf(ap.Field("engine"), "must be auto or extAuthz, not %q", s.Authz.Engine)
	}
	switch s.Authz.FailureMode {
	case "", FailClosed, FailOpen:
	default:
		errs.Addf(ap.Field("failureMode"), "must be CLOSED or OPEN, not %q", s.Authz.FailureMode)
	}
	if t := s.Authz.Timeout; t != nil && (t.Duration < time.Millisecond || t.Duration > time.Minute) {
		errs.Addf(ap.Field("timeout"), "must be between 1ms and 1m, not %s", t.Duration)
	}
	if s.Authz.MaxRequestBytes > 1<<20 {
		errs.Addf(ap.Field("maxRequestBytes"), "must be at most 1048576")
	}
	tp := p.Field("tracing")
	if s.Tracing.Enabled && s.Tracing.Collector == "" {
		errs.Addf(tp.Field("collector"), "required when tracing is enabled")
	}
	if c := s.Tracing.Collector; c != "" {
		validateHostPort(&errs, tp.Field("collector"), c)
	}
	if r := s.Tracing.SamplingPercent; r != nil && !(*r >= 0 && *r <= 100) {
		errs.Addf(tp.Field("samplingPercent"), "must be between 0 and 100, not %v", *r)
	}
	return errs
}

func (d *MeshDoc) setDefaults() {
	s := &d.Spec
	if s.MTLS.Mode == "" {
		s.MTLS.Mode = MTLSStrict
	}
	if s.DefaultDecision == "" {
		s.DefaultDecision = DecisionDeny
	}
	if s.Authz.Mode == "" {
		s.Authz.Mode = AuthzEnforce
	}
	if s.Authz.Engine == "" {
		s.Authz.Engine = EngineAuto
	}
	if s.Authz.FailureMode == "" {
		s.Authz.FailureMode = FailClosed
	}
	if s.Authz.Timeout == nil {
		s.Authz.Timeout = &Duration{DefaultAuthzTimeout}
	}
	if s.Tracing.SamplingPercent == nil {
		v := DefaultTracingSampling
		s.Tracing.SamplingPercent = &v
	}
}

func validateHostPort(errs *FieldErrors, p Path, v string) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		errs.Addf(p, "must be host:port, not %q", v)
		return
	}
	if host == "" {
		errs.Addf(p, "host is empty in %q", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		errs.Addf(p, "port must be 1-65535 in %q", v)
	}
}
