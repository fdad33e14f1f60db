package authztest

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"

	"github.com/portcullis/portcullis/test/testca"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WorkloadAPI is a SPIFFE Workload API server on a unix socket that hands out one X.509-SVID
// and its CA as the bundle, for testing what consumes the Workload API (go-spiffe's client
// talks to it over real gRPC).
type WorkloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	// Socket is the unix socket's path.
	Socket string
	svid   *testca.SVID
	ca     *testca.CA
	srv    *grpc.Server
}

// TB for cleanup as well.
type cleanupTB interface {
	TB
	TempDir() string
	Cleanup(func())
}

// StartWorkloadAPI serves svid (issued by ca) until the test ends.
func StartWorkloadAPI(t cleanupTB, ca *testca.CA, svid *testca.SVID) *WorkloadAPI {
	t.Helper()
	// Unix socket paths are short (108 bytes): t.TempDir() under a long test name may not fit.
	dir, err := os.MkdirTemp("", "wlapi")
	if err != nil {
		t.Fatalf("authztest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	w := &WorkloadAPI{Socket: filepath.Join(dir, "api.sock"), svid: svid, ca: ca, srv: grpc.NewServer()}
	ln, err := net.Listen("unix", w.Socket)
	if err != nil {
		t.Fatalf("authztest: %v", err)
	}
	workloadpb.RegisterSpiffeWorkloadAPIServer(w.srv, w)
	go func() { _ = w.srv.Serve(ln) }() // returns when stopped
	t.Cleanup(w.srv.Stop)
	return w
}

// FetchX509SVID sends the SVID once and keeps the stream open, as the Workload API does.
func (w *WorkloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	// The Workload API requires this header, so that browsers and proxies cannot call it.
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	key, err := x509.MarshalPKCS8PrivateKey(w.svid.X509SVID().PrivateKey)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := stream.Send(&workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId:    w.svid.ID.String(),
		X509Svid:    w.svid.Leaf.Raw,
		X509SvidKey: key,
		Bundle:      w.ca.Cert.Raw,
	}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}
