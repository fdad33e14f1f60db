package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
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
				ServiceName: t.p.Service.Metadata.Name,
			})},
		},
		CustomTags: []*tracingtypev3.CustomTag{
			literalTag("portcullis.direction", direction),
			literalTag("portcullis.workload", t.p.NodeID),
			literalTag("portcullis.principal", t.p.Identity.String()),
		},
	}
}

func literalTag(name, value string) *tracingtypev3.CustomTag {
	return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Literal_{
		Literal: &tracingtypev3.CustomTag_Literal{Value: value},
	}}
}
