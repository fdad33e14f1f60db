package translate

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/portcullis/portcullis/xds/model"
)

// extAuthz configures the ext_authz filter: gRPC to the control plane's authorization service
// through a cluster with HTTP/2 keepalive (one connection, not one per call), the caller's
// certificate included so the service sees its SPIFFE ID, the mesh's timeout and failure mode.
// When authorization is unreachable and the mesh fails closed, requests get 503 — not the 403 of
// a policy denial — so an outage is never mistaken for a policy.
func (t *translator) extAuthz(in target) *extauthzv3.ExtAuthz {
	authz := t.p.Mesh.Config.Spec.Authz
	cfg := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
			Timeout:         durationpb.New(authz.Timeout.Duration),
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       authz.FailureMode == model.FailOpen,
		IncludePeerCertificate: true,
		IncludeTlsSession:      true,
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		StatPrefix:             "portcullis",
	}
	if cfg.FailureModeAllow {
		// Let the application see that a request was let through unchecked.
		cfg.FailureModeAllowHeaderAdd = true
	}
	if n := authz.MaxRequestBytes; n > 0 {
		cfg.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: n, AllowPartialMessage: true}
	}
	t.source(in.listener, t.p.Mesh.Config)
	return cfg
}

// authzEnforced reports whether inbound listeners call the authorization service; with the
// mesh's authorization mode OFF they do not, and the proxy gets no authorization cluster.
func (t *translator) authzEnforced() bool {
	return t.p.Mesh.Config.Spec.Authz.Mode != model.AuthzOff
}

// extAuthzPerRoute names the destination for the authorization service.
func (t *translator) extAuthzPerRoute(in target) *extauthzv3.ExtAuthzPerRoute {
	ref := model.RefOf(in.service)
	return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
		CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: map[string]string{
			model.ContextKeyService:   ref.Name,
			model.ContextKeyNamespace: ref.Namespace,
			model.ContextKeyPort:      strconv.Itoa(int(in.port)),
		}},
	}}
}
