package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// SDSSecret references a secret the agent serves over SDS. Certificates are named by the
// workload's SPIFFE ID; the validation context (the trust bundle with Envoy's SPIFFE validator)
// by the trust domain's ID, "spiffe://<trust-domain>".
func SDSSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SDSCluster}},
				}},
			}},
		},
	}
}

// CommonTLS is the TLS context every mesh connection uses: the proxy's SVID, TLS 1.2+, and the
// trust domain's validation context, narrowed to the given peer IDs when there are any.
func CommonTLS(self spiffeid.ID, peers []spiffeid.ID, alpn []string) *tlsv3.CommonTlsContext {
	bundle := SDSSecret(self.TrustDomain().IDString())
	ctx := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{SDSSecret(self.String())},
		AlpnProtocols:                  alpn,
	}
	if len(peers) == 0 {
		ctx.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: bundle}
		return ctx
	}
	// The SPIFFE validator in the SDS secret honours match_typed_subject_alt_names (URI SANs), so
	// the combined context checks both the bundle and the expected identities.
	sans := make([]*tlsv3.SubjectAltNameMatcher, len(peers))
	for i, id := range peers {
		sans[i] = &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id.String()}},
		}
	}
	ctx.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
			ValidationContextSdsSecretConfig: bundle,
		},
	}
	return ctx
}

// downstreamTLS is the inbound listener's TLS: client certificates required (any workload of the
// trust domain; authorization decides per request).
func (t *translator) downstreamTLS() *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: t.any(&tlsv3.DownstreamTlsContext{
			CommonTlsContext:         CommonTLS(t.p.Identity, nil, []string{"h2", "http/1.1"}),
			RequireClientCertificate: wrapperspb.Bool(true),
		})},
	}
}

// upstreamTLS is the TLS of a connection to another workload or the control plane: the peer must
// present one of the given SPIFFE IDs.
func (t *translator) upstreamTLS(peers []spiffeid.ID, sni string, alpn []string) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: t.any(&tlsv3.UpstreamTlsContext{
			CommonTlsContext: CommonTLS(t.p.Identity, peers, alpn),
			Sni:              sni,
		})},
	}
}
