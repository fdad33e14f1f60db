package server

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/test/testca"
)

// TestGRPCWithMTLS runs the service over real gRPC on loopback with SPIFFE mTLS, the way the
// standalone command does: only workloads of the trust domain may call it.
func TestGRPCWithMTLS(t *testing.T) {
	f := newFixture(t, "")
	ca := testca.New(t, "portcullis.local")
	serverID := spiffeid.RequireFromString("spiffe://portcullis.local/ns/portcullis/sa/authz")
	serverSVID := ca.SVID(t, serverID.String())
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")

	g := grpc.NewServer(append(GRPCServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(serverSVID.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td)))))...)
	f.srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }() // returns when stopped
	t.Cleanup(g.Stop)

	call := func(t *testing.T, creds credentials.TransportCredentials) (*authv3.CheckResponse, error) {
		t.Helper()
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return authv3.NewAuthorizationClient(conn).Check(ctx, request(t, nil))
	}

	t.Run("a proxy of the trust domain", func(t *testing.T) {
		proxy := ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend")
		resp, err := call(t, credentials.NewTLS(tlsconfig.MTLSClientConfig(proxy.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeID(serverID))))
		if err != nil {
			t.Fatal(err)
		}
		if httpCode(resp) != 200 {
			t.Fatalf("%s", describe(resp))
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		_, err := call(t, credentials.NewTLS(tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeID(serverID))))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want Unavailable (handshake refused)", err)
		}
	})
	t.Run("another trust domain", func(t *testing.T) {
		evil := testca.New(t, "evil.local")
		intruder := evil.SVID(t, "spiffe://evil.local/ns/demo/sa/backend")
		_, err := call(t, credentials.NewTLS(tlsconfig.MTLSClientConfig(intruder.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeID(serverID))))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want Unavailable (handshake refused)", err)
		}
	})
}

func TestOpenDecisionLogTightensAnExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	if err := os.WriteFile(path, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, closeLog, err := OpenDecisionLog(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "{}\n"); err != nil {
		t.Fatal(err)
	}
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("decision log mode %v, want 0600: it names callers and paths", st.Mode().Perm())
	}
	if data, _ := os.ReadFile(path); string(data) != "{}\n{}\n" {
		t.Fatalf("decision log %q: the existing records must be kept and new ones appended", data)
	}
}
