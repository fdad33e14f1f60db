package model

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// APIVersion is the only apiVersion documents may carry.
const APIVersion = "portcullis.dev/v1alpha1"

// DefaultNamespace is the namespace of a namespaced document that names none.
const DefaultNamespace = "default"

// The document kinds, in the order their documentation lists them.
const (
	KindMesh                 = "Mesh"
	KindService              = "Service"
	KindWorkload             = "Workload"
	KindJWTProvider          = "JWTProvider"
	KindAPIKeyProvider       = "APIKeyProvider"
	KindAuthorizationPolicy  = "AuthorizationPolicy"
	KindRateLimitPolicy      = "RateLimitPolicy"
	KindCredentialRevocation = "CredentialRevocation"
)

// TypeMeta is the apiVersion and kind every document starts with.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta is the Kubernetes-shaped metadata of a document.
type ObjectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Origin says where a document came from, so that errors found later (in translation, or in
// Envoy's NACK) can name the document that caused them.
type Origin struct {
	File     string `json:"file"`
	Document int    `json:"document"` // 1-based
	Line     int    `json:"line,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("250ms", "1h").
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (want e.g. \"250ms\", \"5m\"): %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// MarshalJSON keeps the string form in JSON (for /debug/mesh and CRDs).
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON accepts the string form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\": %s", b)
	}
	return d.UnmarshalText([]byte(s))
}

// dns1123Label is a Kubernetes DNS label: names and namespaces must be valid ones so the same
// documents can become Kubernetes objects.
var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// labelValue is a Kubernetes label value.
var labelValue = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)

// labelKey is a (prefix/)name Kubernetes label key.
var labelKey = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

func validateDNSLabel(errs *FieldErrors, p Path, v string) {
	switch {
	case v == "":
		errs.Addf(p, "required")
	case len(v) > 63:
		errs.Addf(p, "%q is longer than 63 characters", v)
	case !dns1123Label.MatchString(v):
		errs.Addf(p, "%q is not a DNS label (lower-case letters, digits and '-', starting and ending with a letter or digit)", v)
	}
}

func (m *ObjectMeta) validate(errs *FieldErrors, namespaced bool) {
	p := Path("metadata")
	validateDNSLabel(errs, p.Field("name"), m.Name)
	if namespaced {
		if m.Namespace != "" {
			validateDNSLabel(errs, p.Field("namespace"), m.Namespace)
		}
	} else if m.Namespace != "" {
		errs.Addf(p.Field("namespace"), "must be empty: this kind is not namespaced")
	}
	for k, v := range m.Labels {
		if len(k) > 317 || !labelKey.MatchString(k) {
			errs.Addf(p.Field("labels").Key(k), "invalid label key")
		}
		if len(v) > 63 || !labelValue.MatchString(v) {
			errs.Addf(p.Field("labels").Key(k), "invalid label value %q", v)
		}
	}
}

// Ref is namespace/name, the identity of a namespaced document within its kind.
type Ref struct {
	Namespace string
	Name      string
}

func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Name
	}
	return r.Namespace + "/" + r.Name
}

// Object is what every document kind implements.
type Object interface {
	// GetKind returns the document's kind.
	GetKind() string
	// GetMeta returns the document's metadata.
	GetMeta() *ObjectMeta
	// Validate checks the document on its own (references to other documents are checked by Build).
	Validate() FieldErrors
	// setDefaults fills in what the user may leave out. Called by Build after Validate.
	setDefaults()
}

// RefOf returns the namespace/name of a document, defaulting the namespace for namespaced kinds.
func RefOf(o Object) Ref {
	m := o.GetMeta()
	if o.GetKind() == KindMesh {
		return Ref{Name: m.Name}
	}
	ns := m.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	return Ref{Namespace: ns, Name: m.Name}
}

// NewObject returns an empty document of the given kind, or nil for an unknown kind. The switch
// is the one list of kinds; sources decode into what it returns.
func NewObject(kind string) Object {
	switch kind {
	case KindMesh:
		return &MeshDoc{}
	case KindService:
		return &ServiceDoc{}
	case KindWorkload:
		return &WorkloadDoc{}
	case KindJWTProvider:
		return &JWTProviderDoc{}
	case KindAPIKeyProvider:
		return &APIKeyProviderDoc{}
	case KindAuthorizationPolicy:
		return &AuthorizationPolicyDoc{}
	case KindRateLimitPolicy:
		return &RateLimitPolicyDoc{}
	case KindCredentialRevocation:
		return &CredentialRevocationDoc{}
	}
	return nil
}

// Kinds lists the document kinds, in documentation order.
var Kinds = []string{KindMesh, KindService, KindWorkload, KindJWTProvider, KindAPIKeyProvider, KindAuthorizationPolicy, KindRateLimitPolicy, KindCredentialRevocation}
