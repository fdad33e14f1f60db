package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/testca"
)

// bootstrapInbound and bootstrapUpstreams frame an inbound listener the way the translator builds
// one — mTLS from callers (%[1]s, %[2]s: the proxy's certificate and key; %[3]s: the CA), then
// the connection manager's own settings and filters, then the router to the app (port %[4]d) —
// and the authorization cluster to this service (port %[5]d, SPIFFE ID %[6]s) over mTLS.
const bootstrapInbound = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{certificate_chain: {inline_string: "%[1]s"}, private_key: {inline_string: "%[2]s"}}]
            validation_context: {trusted_ca: {inline_string: "%[3]s"}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
`

const bootstrapUpstreams = `          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[4]d}}}}]}]
  - name: authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options:
            connection_keepalive: {interval: 30s, timeout: 5s}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificates: [{certificate_chain: {inline_string: "%[1]s"}, private_key: {inline_string: "%[2]s"}}]
          validation_context:
            trusted_ca: {inline_string: "%[3]s"}
            match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "%[6]s"}}]
    load_assignment:
      cluster_name: authz
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[5]d}}}}]}]
`

// envoyBootstrap: ext_authz to this service with the listener's context extensions.
const envoyBootstrap = bootstrapInbound + `          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: app}}]
              typed_per_filter_config:
                envoy.filters.http.ext_authz:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                  check_settings:
                    context_extensions: {service: backend, namespace: demo, port: "8080"}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              include_peer_certificate: true
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: 2s
` + bootstrapUpstreams

func yamlString(pem []byte) string {
	return strings.ReplaceAll(strings.TrimSpace(string(pem)), "\n", `\n`)
}

// TestThroughEnvoy puts the service behind a real Envoy's ext_authz filter.
func TestThroughEnvoy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Envoy")
	}
	envoytest.Require(t)
	f := newFixture(t, "")
	ca := testca.New(t, "portcullis.local")
	authzID := "spiffe://portcullis.local/ns/portcullis/sa/authz"
	authzSVID := ca.SVID(t, authzID)
	proxySVID := ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend")
	clientSVID := ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/frontend")

	// The service, over mTLS, as cmd runs it.
	g := grpc.NewServer(append(GRPCServerOptions(), grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(
		authzSVID.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("portcullis.local"))))))...)
	f.srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }() // returns when stopped
	t.Cleanup(g.Stop)

	// The application records the decision id it is given.
	var mu sync.Mutex
	var appSaw []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appSaw = append(appSaw, r.Header.Get(HeaderDecisionID))
		mu.Unlock()
		fmt.Fprint(w, "hello")
	}))
	t.Cleanup(app.Close)

	bootstrap := fmt.Sprintf(envoyBootstrap, yamlString(proxySVID.CertPEM), yamlString(proxySVID.KeyPEM), yamlString(ca.CertPEM),
		app.Listener.Addr().(*net.TCPAddr).Port, ln.Addr().(*net.TCPAddr).Port, authzID)
	envoy := envoytest.Start(t, bootstrap, envoytest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port, err := envoy.ListenerPort(ctx, "inbound")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{clientSVID.TLSCertificate()},
		RootCAs:      ca.Pool(),
		// SVIDs have no DNS names: check the proxy's SPIFFE ID instead of a host name.
		InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate below checks chain and ID
		VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(ca.Bundle(), tlsconfig.AuthorizeID(proxySVID.ID)),
	}}}
	admin := f.token(t, map[string]any{"roles": []string{"admin"}})
	get := func(path string, headers map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	cases := []struct {
		name    string
		path    string
		headers map[string]string
		status  int
	}{
		{"allowed", "/api/items?page=1", nil, 200},
		{"spoofed decision id is replaced", "/api/items", map[string]string{HeaderDecisionID: "forged"}, 200},
		{"DENY policy", "/debug/pprof", nil, 403},
		{"encoded traversal to a denied path", "/api/%2e%2e/debug/pprof", nil, 403},
		{"no ALLOW", "/other", nil, 403},
		{"JWT required", "/admin/users", nil, 401},
		{"JWT given", "/admin/users", map[string]string{"Authorization": "Bearer " + admin}, 200},
		{"JWT invalid", "/admin/users", map[string]string{"Authorization": "Bearer " + admin + "x"}, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(tc.path, tc.headers)
			id := resp.Header.Get(HeaderDecisionID)
			if resp.StatusCode != tc.status || len(id) != 26 {
				t.Fatalf("status %d, decision id %q, body %q; want %d\n%s", resp.StatusCode, id, body, tc.status, envoy.Log())
			}
			if tc.status == 200 {
				mu.Lock()
				last := appSaw[len(appSaw)-1]
				mu.Unlock()
				if last != id || body != "hello" {
					t.Errorf("the app saw decision id %q, the client %q", last, id)
				}
				return
			}
			var eb errorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.DecisionID != id || eb.Status != tc.status {
				t.Errorf("body %q (%v)", body, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	// The service saw the caller's SPIFFE ID (from Envoy's view of the client certificate,
	// cross-checked against the certificate itself) and the listener's destination.
	recs := f.records(t)
	if len(recs) != len(cases) {
		t.Fatalf("%d decisions logged, want %d", len(recs), len(cases))
	}
	for _, r := range recs {
		if r.Source.Principal != "spiffe://portcullis.local/ns/demo/sa/frontend" || r.Destination.Service != "backend" || r.Destination.Port != 8080 || r.Source.Address != "127.0.0.1" {
			t.Errorf("record %+v", r)
		}
	}
}
