package agent

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// workloadAPI serves the SPIFFE Workload API's X.509 part. Every caller that can open the socket
// gets the agent's one identity: the agent runs beside one workload, and the socket's mode is
// the access control. JWT-SVIDs are not served (Unimplemented).
type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	cur *current
}

func (w *workloadAPI) register(g *grpc.Server) { workload.RegisterSpiffeWorkloadAPIServer(g, w) }

// checkHeader enforces the specification's security header, which keeps a browser or SSRF-style
// request that reaches the socket from being answered.
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// FetchX509SVID streams the SVID: now if there is one, then on every rotation. A caller that
// arrives before the first SVID waits for it.
func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return w.stream(stream.Context(), func(i *Identity) error {
		return stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId:    i.ID().String(),
			X509Svid:    i.chainDER,
			X509SvidKey: i.keyDER,
			Bundle:      i.bundleDER,
		}}})
	})
}

// FetchX509Bundles streams the trust bundle, keyed by trust domain ID.
func (w *workloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	var last []byte
	return w.stream(stream.Context(), func(i *Identity) error {
		if string(last) == string(i.bundleDER) {
			return nil // a rotation that kept the bundle: nothing new for bundle watchers
		}
		last = i.bundleDER
		return stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{
			i.ID().TrustDomain().IDString(): i.bundleDER,
		}})
	})
}

func (w *workloadAPI) stream(ctx context.Context, send func(*Identity) error) error {
	if err := checkHeader(ctx); err != nil {
		return err
	}
	var sent *Identity
	for {
		id, changed := w.cur.Current()
		if id != nil && id != sent {
			if err := send(id); err != nil {
				return err
			}
			sent = id
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
