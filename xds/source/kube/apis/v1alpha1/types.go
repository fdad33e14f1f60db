package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/xds/model"
)

// Group and Version of the API; the kinds are model.Kinds.
const (
	Group   = "portcullis.dev"
	Version = "v1alpha1"
)

// Condition types written on every resource's status.
const (
	// ConditionAccepted: the document is valid on its own and with the rest of the mesh
	// (reason Accepted or Invalid, the validation problems as the message).
	ConditionAccepted = "Accepted"
	// ConditionProgrammed: the mesh version containing the document is ACKed by the proxies
	// ("programmed on N of M proxies").
	ConditionProgrammed = "Programmed"
)

// Status is what the control plane reports about a resource.
type Status struct {
	// ObservedGeneration is the generation the conditions describe.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted and Programmed.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Mesh is the one mesh-wide document: trust domain and defaults every proxy shares.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=portcullis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Trust Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Mesh struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.MeshSpec `json:"spec"`
	Status            Status         `json:"status,omitempty"`
}

// Service declares a mesh service: its identities and ports. On Kubernetes it refines the
// Kubernetes Service of the same name (protocols, service accounts); a Kubernetes Service with
// http/http2/grpc ports is a mesh service without one.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis,shortName=psvc
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Service struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.ServiceSpec `json:"spec"`
	Status            Status            `json:"status,omitempty"`
}

// Workload registers a workload outside the cluster (a VM) with the mesh; pods need none.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.WorkloadSpec `json:"spec"`
	Status            Status             `json:"status,omitempty"`
}

// JWTProvider declares an issuer whose end-user tokens the authorization service verifies.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.spec.issuer`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type JWTProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.JWTProviderSpec `json:"spec"`
	Status            Status                `json:"status,omitempty"`
}

// APIKeyProvider holds API keys as salted hashes, each bound to an identity with attributes.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Header",type=string,JSONPath=`.spec.header`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type APIKeyProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.APIKeyProviderSpec `json:"spec"`
	Status            Status                   `json:"status,omitempty"`
}

// AuthorizationPolicy decides requests to a service (with a selector) or to every service.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis,shortName=authzpolicy
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.selector.service`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.AuthorizationPolicySpec `json:"spec"`
	Status            Status                        `json:"status,omitempty"`
}

// RateLimitPolicy limits the request rate a service's proxies accept.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.selector.service`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.RateLimitPolicySpec `json:"spec"`
	Status            Status                    `json:"status,omitempty"`
}

// CredentialRevocation lists JWTs refused before their expiry (docs/documents.md). Who may write
// it in the root namespace may revoke any user's tokens: grant it like the root namespace's
// JWTProviders.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=portcullis,shortName=revocation
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CredentialRevocation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              model.CredentialRevocationSpec `json:"spec"`
	Status            Status                         `json:"status,omitempty"`
}

// Resource is the plural resource name of a kind, as the API server serves it.
func Resource(kind string) string {
	switch kind {
	case model.KindMesh:
		return "meshes"
	case model.KindService:
		return "services"
	case model.KindWorkload:
		return "workloads"
	case model.KindJWTProvider:
		return "jwtproviders"
	case model.KindAPIKeyProvider:
		return "apikeyproviders"
	case model.KindAuthorizationPolicy:
		return "authorizationpolicies"
	case model.KindRateLimitPolicy:
		return "ratelimitpolicies"
	case model.KindCredentialRevocation:
		return "credentialrevocations"
	}
	return ""
}

// Labels and annotations of the portcullis.dev API on Kubernetes objects.
const (
	// LabelInject on a namespace ("enabled") asks the injector to add the sidecar to its pods.
	LabelInject = "portcullis.dev/inject"
	// AnnotationInject on a pod: "true" asks for the sidecar, "false" opts the pod out.
	AnnotationInject = "portcullis.dev/inject"
	// AnnotationInjected is set by the injector on pods it changed (value: the injector's
	// version); pods carrying it speak mesh mTLS.
	AnnotationInjected = "portcullis.dev/injected"
	// InjectEnabled is the namespace label value that enables injection.
	InjectEnabled = "enabled"
)
