package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// tracing configures OpenTelemetry tracing for a connection manager, or returns nil when the mesh
// has tracing off. Spans carry the workload's service name and identity; W3C trace context is
// Envoy's OpenTelemetry tracer's propagation format.
func (t *translator) tracing(direction string) *hcmv3.HttpConnectionManager_Tracing {
	tr := t.p.Mesh.Config.Spec.Tracing
	if !tr.Enabled {
		return nil
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: *tr.SamplingPercent},
		Provider: &tracev3.Tracing_Http{
			Name: "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: t.any(&tracev3.OpenTelemetryConfig{
				GrpcService: &corev3.GrpcService{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingCluster}},
					Timeout:         durationpb.New(1e9),
				},
				ServiceName: t.serviceName(),
			})},
		},
		CustomTags: t.spanTags(direction),
	}
}

// spanTags name both ends of a hop by SPIFFE ID, and on inbound hops the authorization decision
// (from the dynamic metadata the ext_authz service returns), so a trace shows who called whom and
// which policy decided.
func (t *translator) spanTags(direction string) []*tracingtypev3.CustomTag {
	self := t.p.Identity.String()
	tags := []*tracingtypev3.CustomTag{
		literalTag("portcullis.direction", direction),
		literalTag("portcullis.workload", t.p.NodeID),
	}
	if direction == "inbound" {
		return append(tags,
			valueTag("portcullis.source.principal", "%DOWNSTREAM_PEER_URI_SAN%"),
			literalTag("portcullis.destination.principal", self),
			valueTag("portcullis.decision_id", "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%"),
			valueTag("portcullis.decision.code", "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:code)%"),
			valueTag("portcullis.decision.policy", "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:policy)%"),
			valueTag("portcullis.decision.rule", "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:rule)%"),
			// A decision Envoy's RBAC made (engine auto): the DENY and ALLOW filters' results and
			// the policy/rule that matched, "namespace/name/rule".
			valueTag("portcullis.rbac.deny", "%DYNAMIC_METADATA(envoy.filters.http.rbac:"+model.RBACDenyPrefix+"enforced_engine_result)%"),
			valueTag("portcullis.rbac.allow", "%DYNAMIC_METADATA(envoy.filters.http.rbac:"+model.RBACAllowPrefix+"enforced_engine_result)%"),
			valueTag("portcullis.rbac.policy", "%DYNAMIC_METADATA(envoy.filters.http.rbac:"+model.RBACDenyPrefix+"enforced_effective_policy_id)%"+
				"%DYNAMIC_METADATA(envoy.filters.http.rbac:"+model.RBACAllowPrefix+"enforced_effective_policy_id)%"),
		)
	}
	return append(tags,
		literalTag("portcullis.source.principal", self),
		valueTag("portcullis.destination.principal", "%UPSTREAM_PEER_URI_SAN%"),
	)
}

func valueTag(name, format string) *tracingtypev3.CustomTag {
	return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Value{Value: format}}
}

func literalTag(name, value string) *tracingtypev3.CustomTag {
	return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Literal_{
		Literal: &tracingtypev3.CustomTag_Literal{Value: value},
	}}
}

// spanName names the spans of a hop "inbound backend.demo" / "outbound backend.demo". Not
// propagated: Envoy would otherwise rename the caller's span after the callee's answer.
func spanName(direction string, svc model.Ref) *routev3.Decorator {
	return &routev3.Decorator{Operation: direction + " " + svc.Name + "." + svc.Namespace, Propagate: wrapperspb.Bool(false)}
}
