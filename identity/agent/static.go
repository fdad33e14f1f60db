package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/portcullis/portcullis/telemetry/serve"
)

// ServeSDS serves one fixed identity over SDS on ln until ctx ends: the same secrets an agent
// serves (the SVID under its SPIFFE ID and "default", the SPIFFE validation context), for tests
// and tools that run Envoy with an SVID they minted themselves and need no rotation.
func ServeSDS(ctx context.Context, ln net.Listener, svid *x509svid.SVID, roots []*x509.Certificate, log *slog.Logger) error {
	key, ok := svid.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return errors.Join(errors.New("agent: SDS needs an ECDSA SVID key"), ln.Close())
	}
	chain := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		chain[i] = c.Raw
	}
	bundle := make([][]byte, len(roots))
	for i, c := range roots {
		bundle[i] = c.Raw
	}
	id, err := newIdentity(chain, key, bundle, time.Now())
	if err != nil {
		return errors.Join(err, ln.Close())
	}
	s := newSDSServer()
	if err := s.update(id); err != nil {
		return errors.Join(err, ln.Close())
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := grpc.NewServer()
	s.register(ctx, g, log)
	return serve.GRPC(ctx, "agent: sds server", g, ln, streamGrace)
}
