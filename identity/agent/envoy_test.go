package agent_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/identity/internal/cptest"
	"github.com/portcullis/portcullis/test/envoytest"
)

// envoyBootstrap has two listeners served with the agent's SDS secrets: "tls" terminates TLS
// with the SVID; "mtls" also requires a client certificate, validated by the validation-context
// secret (Envoy's SPIFFE validator).
func envoyBootstrap(sdsSocket string, id spiffeid.ID) string {
	sds := `sds_config:
                  resource_api_version: V3
                  initial_fetch_timeout: 10s
                  api_config_source:
                    api_type: GRPC
                    transport_api_version: V3
                    grpc_services: [{envoy_grpc: {cluster_name: sds}}]`
	listener := func(name, extra string) string {
		return fmt.Sprintf(`
  - name: %[1]s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %[1]s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "hello from %[1]s"}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          %[2]s
          common_tls_context:
            tls_certificate_sds_secret_configs:
              - name: "%[3]s"
                %[4]s%[5]s`, name, map[bool]string{true: "require_client_certificate: true", false: ""}[extra != ""], id, sds, extra)
	}
	mtls := fmt.Sprintf(`
            validation_context_sds_secret_config:
                name: "%s"
                %s`, id.TrustDomain().IDString(), sds)
	return fmt.Sprintf(`
node: {id: envoytest, cluster: envoytest}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  clusters:
  - name: sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: sds
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: "%s"}}}}]}]
  listeners:%s%s
`, sdsSocket, listener("tls", ""), listener("mtls", mtls))
}

// envoySerials returns the serial numbers of the certificates Envoy's /certs reports for its
// listeners' chains.
func envoySerials(t *testing.T, e *envoytest.Envoy) []string {
	t.Helper()
	var certs struct {
		Certificates []struct {
			CertChain []struct {
				SerialNumber string `json:"serial_number"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	if err := e.AdminJSON(context.Background(), "/certs", &certs); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range certs.Certificates {
		if len(c.CertChain) > 0 {
			out = append(out, strings.ToLower(strings.TrimLeft(c.CertChain[0].SerialNumber, "0")))
		}
	}
	return out
}

func get(t *testing.T, cfg *tls.Config, port int) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestEnvoySDS: a real Envoy gets the SVID over SDS from the agent's socket, terminates TLS with
// it (a go-spiffe client authorizing the SPIFFE ID connects), picks up a rotation without a
// restart, and its SPIFFE validator requires and accepts a client SVID of the trust domain while
// refusing a certificate from another CA.
func TestEnvoySDS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Envoy")
	}
	envoytest.Require(t)
	cp := cptest.Start(t, cptest.Options{SVIDTTL: 6 * time.Second})
	a := startAgent(t, cp.Addr, cp.Token(t, web, time.Hour), agent.Config{})
	first := waitReady(t, a)
	e := envoytest.Start(t, envoyBootstrap(filepath.Join(a.dir, agent.SDSSocket), web), envoytest.Options{})
	ctx := context.Background()
	tlsPort, err := e.ListenerPort(ctx, "tls")
	if err != nil {
		t.Fatal(err)
	}
	mtlsPort, err := e.ListenerPort(ctx, "mtls")
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(cptest.TrustDomain, cp.Roots())
	serverCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(web))
	body, err := get(t, serverCfg, tlsPort)
	if err != nil || body != "hello from tls" {
		t.Fatalf("TLS to Envoy with SPIFFE ID check: %q, %v", body, err)
	}
	wrongID := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(cptest.TrustDomain, "/ns/shop/sa/other")))
	if _, err := get(t, wrongID, tlsPort); err == nil {
		t.Fatal("client authorizing another SPIFFE ID connected")
	}

	// mTLS listener: the validation context secret carries Envoy's SPIFFE validator.
	client := join(t, cp, spiffeid.RequireFromPath(cptest.TrustDomain, "/ns/shop/sa/client"))
	if body, err := get(t, tlsconfig.MTLSClientConfig(client, bundle, tlsconfig.AuthorizeID(web)), mtlsPort); err != nil || body != "hello from mtls" {
		t.Fatalf("mTLS with a client SVID: %q, %v", body, err)
	}
	if _, err := get(t, serverCfg, mtlsPort); err == nil {
		t.Fatal("mTLS listener accepted a client without a certificate")
	}
	foreign := join(t, cptest.Start(t, cptest.Options{Quiet: true}), spiffeid.RequireFromPath(cptest.TrustDomain, "/ns/shop/sa/client"))
	if _, err := get(t, tlsconfig.MTLSClientConfig(foreign, bundle, tlsconfig.AuthorizeID(web)), mtlsPort); err == nil {
		t.Fatal("mTLS listener accepted a certificate from another CA")
	}

	dump, err := e.Admin(ctx, "/config_dump?resource=dynamic_active_secrets")
	if err != nil || !strings.Contains(dump, agent.SPIFFEValidatorName) || !strings.Contains(dump, `"name": "spiffe://example.org"`) {
		t.Fatalf("Envoy's secrets lack the SPIFFE validator (%v):\n%s", err, dump)
	}

	// Rotation: Envoy's /certs shows the new serial, no restart.
	want := first.Leaf().SerialNumber.Text(16)
	if got := envoySerials(t, e); !contains(got, want) {
		t.Fatalf("/certs serials %v, want %s", got, want)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur, _ := a.Current()
		next := cur.Leaf().SerialNumber.Text(16)
		if next != want {
			got := envoySerials(t, e)
			if contains(got, next) && !contains(got, want) {
				t.Logf("Envoy serves the rotated SVID %s (was %s)", next, want)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Envoy did not pick up the rotation: /certs %v, agent %s", envoySerials(t, e), next)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body, err := get(t, serverCfg, tlsPort); err != nil || body != "hello from tls" {
		t.Fatalf("TLS after rotation: %q, %v", body, err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// join gets an SVID directly from the certificate service, for test clients.
func join(t *testing.T, cp *cptest.ControlPlane, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	a := startAgent(t, cp.Addr, cp.Token(t, id, time.Hour), agent.Config{NoPersist: true})
	got := waitReady(t, a)
	return got.SVID
}
