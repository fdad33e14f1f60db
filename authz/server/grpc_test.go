package server

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
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
// commands do: only proxies of the trust domain may call it, and each decision names the proxy
// that asked.
func TestGRPCWithMTLS(t *testing.T) {
	ca := testca.New(t, "portcullis.local")
	serverID := spiffeid.RequireFromString("spiffe://portcullis.local/ns/portcullis/sa/authz")
	controlPlaneID := spiffeid.RequireFromString("spiffe://portcullis.local/ns/portcullis-system/sa/controlplane")
	serverSVID := ca.SVID(t, serverID.String())
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	revoked := ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend")
	f := newFixture(t, "", func(o *Options) {
		o.Callers = &Callers{TrustDomain: td, NotProxies: []spiffeid.ID{serverID, controlPlaneID},
			Revoked: func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(revoked.Leaf.SerialNumber) == 0 }}
	})

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
	t.Run("the decision names the proxy that asked", func(t *testing.T) {
		recs := f.records(t)
		if len(recs) != 1 || recs[0].Caller != "spiffe://portcullis.local/ns/demo/sa/backend" || recs[0].Source.Principal != "spiffe://portcullis.local/ns/demo/sa/frontend" {
			t.Fatalf("records %+v", recs)
		}
	})
	for name, tc := range map[string]struct {
		svid *testca.SVID
		want string
	}{
		"the control plane is not a proxy":   {ca.SVID(t, controlPlaneID.String()), "a mesh service, not a proxy"},
		"the service itself is not a proxy":  {ca.SVID(t, serverID.String()), "a mesh service, not a proxy"},
		"an SVID that is not a workload's":   {ca.SVID(t, "spiffe://portcullis.local/custom/thing"), "not a workload identity"},
		"a revoked proxy":                    {revoked, "revoked"},
		"an SVID with extra path after /sa/": {ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend/x"), "not a workload identity"},
	} {
		t.Run(name, func(t *testing.T) {
			before := len(f.records(t))
			_, err := call(t, credentials.NewTLS(tlsconfig.MTLSClientConfig(tc.svid.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeID(serverID))))
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want PermissionDenied: %s", err, tc.want)
			}
			if n := len(f.records(t)); n != before {
				t.Errorf("a refused caller left %d decision records", n-before)
			}
		})
	}
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

func TestIsWorkloadPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/ns/demo/sa/frontend":     true,
		"/ns/a/sa/b":               true,
		"/ns/demo/sa/":             false,
		"/ns//sa/frontend":         false,
		"/ns/demo/sa/frontend/x":   false,
		"/ns/demo/x/sa/frontend":   false,
		"/ns/a/sa/b/sa/c":          false,
		"/ns/demo/frontend":        false,
		"/sa/frontend/ns/demo":     false,
		"ns/demo/sa/frontend":      false,
		"/ns/demo/sa/frontend/":    false,
		"/nsx/demo/sa/frontend":    false,
		"/ns/portcullis/sa/authz":  true,
		"":                         false,
		"/":                        false,
		"/ns/demo/sa/frontend/sa/": false,
	} {
		if got := isWorkloadPath(path); got != want {
			t.Errorf("isWorkloadPath(%q) = %v, want %v", path, got, want)
		}
	}
}
