package ratelimit

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/test/redistest"
	"github.com/portcullis/portcullis/test/testca"
)

// TestOnlyProxiesCall runs the service over real gRPC with SPIFFE mTLS and the authorization
// service's caller check, as the commands serve it: a proxy's call takes a token; the control
// plane, the authorization service and an identity that is no workload's are refused before
// Redis is touched, so no member of the trust domain can spend a caller's bucket by calling the
// service itself.
func TestOnlyProxiesCall(t *testing.T) {
	r := redistest.Start(t, "")
	ca := testca.New(t, "portcullis.local")
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	serverID := spiffeid.RequireFromString("spiffe://portcullis.local/ns/portcullis/sa/authz")
	controlPlaneID := spiffeid.RequireFromString("spiffe://portcullis.local/ns/portcullis-system/sa/controlplane")
	callers := &server.Callers{TrustDomain: td, NotProxies: []spiffeid.ID{serverID, controlPlaneID}}
	f := newServiceWith(t, Options{Redis: Redis{Addr: r.Addr}, Authorize: callers.Authorize})
	addr := serveMTLS(t, f, ca, serverID)
	call := func(t *testing.T, id string) (*rlsv3.RateLimitResponse, error) {
		t.Helper()
		conn := dialAs(t, addr, ca, id, serverID)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{
			Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{descriptor("per-user", "1/1/3600000", "caller", "jwt:carol")},
		})
	}

	for name, id := range map[string]string{
		"the control plane":          controlPlaneID.String(),
		"the authorization service":  serverID.String(),
		"an identity not a workload": "spiffe://portcullis.local/custom/thing",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := call(t, id); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("err = %v, want PermissionDenied", err)
			}
		})
	}
	if n, err := r.Calls("evalsha"); err != nil || n != 0 {
		t.Fatalf("refused callers ran %d bucket scripts (%v), want none", n, err)
	}
	if n := f.checks(t, "", "refused"); n != 3 {
		t.Errorf("%d calls counted refused, want 3", n)
	}
	// carol's bucket is whole: the proxy's first call takes its one token, the second is over.
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp, err := call(t, "spiffe://portcullis.local/ns/shop/sa/api")
		if err != nil || resp.GetOverallCode() != want {
			t.Errorf("proxy call %d: %v %v, want %v", i, resp.GetOverallCode(), err, want)
		}
	}
}

// serveMTLS serves the fixture's service over real gRPC with SPIFFE mTLS as serverID, with the
// server options the commands use, until the test ends; it returns the loopback address.
func serveMTLS(t testing.TB, f *fixture, ca *testca.CA, serverID spiffeid.ID) string {
	t.Helper()
	tlsConf := tlsconfig.MTLSServerConfig(ca.SVID(t, serverID.String()).X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(serverID.TrustDomain()))
	g := grpc.NewServer(append(server.GRPCServerOptions(), grpc.Creds(credentials.NewTLS(tlsConf)))...)
	f.svc.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }() // returns when stopped
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// dialAs connects to the service at addr as the workload id, expecting serverID; the caller
// closes the connection.
func dialAs(t testing.TB, addr string, ca *testca.CA, id string, serverID spiffeid.ID) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(tlsconfig.MTLSClientConfig(ca.SVID(t, id).X509SVID(), ca.Bundle(), tlsconfig.AuthorizeID(serverID)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
