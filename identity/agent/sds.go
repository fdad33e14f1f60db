package agent

import (
	"context"
	"fmt"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// Secret names served over SDS. The translator references them from Envoy's TLS contexts.
const (
	// DefaultSecretName aliases the workload's TLS certificate secret.
	DefaultSecretName = "default"
	// SPIFFEValidatorName is Envoy's SPIFFE certificate validator extension.
	SPIFFEValidatorName = "envoy.tls.cert_validator.spiffe"
)

// TLSSecretName is the name of the TLS certificate secret for an identity: its SPIFFE ID.
func TLSSecretName(i *Identity) string { return i.ID().String() }

// ValidationSecretName is the name of the validation context secret: the trust domain's ID,
// e.g. "spiffe://example.org".
func ValidationSecretName(i *Identity) string { return i.ID().TrustDomain().IDString() }

// secrets builds the SDS resources of an identity: the TLS certificate under its SPIFFE ID and
// "default", and a validation context that makes Envoy verify peers with its SPIFFE validator
// against the bundle (so a peer certificate must be an SVID of the trust domain).
func secrets(i *Identity) (map[string]types.Resource, error) {
	tlsCert := &tlsv3.TlsCertificate{
		CertificateChain: inline(i.chainPEM),
		PrivateKey:       inline(i.keyPEM),
	}
	validator, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{
		TrustDomains: []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{{
			Name:        i.ID().TrustDomain().Name(),
			TrustBundle: inline(i.bundlePEM),
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	out := map[string]types.Resource{}
	for _, name := range []string{TLSSecretName(i), DefaultSecretName} {
		out[name] = &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tlsCert}}
	}
	vname := ValidationSecretName(i)
	out[vname] = &tlsv3.Secret{Name: vname, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: SPIFFEValidatorName, TypedConfig: validator},
	}}}
	for name, r := range out {
		if err := r.(*tlsv3.Secret).ValidateAll(); err != nil {
			return nil, fmt.Errorf("agent: secret %q: %w", name, err)
		}
	}
	return out, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// sdsServer serves the identity's secrets from a linear cache: every rotation replaces them and
// go-control-plane pushes the new versions to every watching Envoy.
type sdsServer struct {
	cache *cache.LinearCache
	log   *slog.Logger
}

func newSDSServer() *sdsServer {
	return &sdsServer{cache: cache.NewLinearCache(resource.SecretType)}
}

func (s *sdsServer) update(i *Identity) error {
	res, err := secrets(i)
	if err != nil {
		return err
	}
	s.cache.SetResources(res)
	return nil
}

func (s *sdsServer) register(ctx context.Context, g *grpc.Server, log *slog.Logger) {
	s.log = log
	srv := xdsserver.NewServer(ctx, s.cache, xdsserver.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if req.GetErrorDetail() != nil {
				log.Warn("Envoy rejected SDS secrets", "stream", id, "version", req.GetVersionInfo(), "names", req.GetResourceNames(), "error", req.GetErrorDetail().GetMessage())
			}
			return nil
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			log.Debug("SDS delta stream opened", "stream", id)
			return nil
		},
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			log.Debug("SDS stream opened", "stream", id)
			return nil
		},
	})
	secretv3.RegisterSecretDiscoveryServiceServer(g, srv)
}
