package envoytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// A static Envoy config proxying to a Go test server returns 200 through Envoy.
func TestStaticEnvoyProxiesToGoServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Envoy (make test's full pass runs it)")
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "go")
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	host, port, err := net.SplitHostPort(backend.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := fmt.Sprintf(`
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`, host, port)
	envoy := Start(t, bootstrap, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lp, err := envoy.ListenerPort(ctx, "ingress")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(lp) + "/through/envoy")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "hello /through/envoy" || resp.Header.Get("X-Backend") != "go" {
		t.Fatalf("through Envoy: %s %q headers %v", resp.Status, body, resp.Header)
	}
	if resp.Header.Get("Server") != "envoy" {
		t.Errorf("response did not pass through Envoy: Server=%q", resp.Header.Get("Server"))
	}
	stats, err := envoy.Admin(ctx, "/stats?filter=^http.ingress.downstream_rq_2xx$")
	if err != nil {
		t.Fatal(err)
	}
	if stats != "http.ingress.downstream_rq_2xx: 1\n" {
		t.Errorf("envoy stats = %q, want one 2xx", stats)
	}
}

func TestSumCounters(t *testing.T) {
	n, err := SumCounters("http.inbound.rbac.deny.allowed: 3\nhttp.inbound.rbac.deny.denied: 4\n")
	if err != nil || n != 7 {
		t.Fatalf("got %d, %v; want 7", n, err)
	}
	if _, err := SumCounters("a.histogram: P0(nan,1)"); err == nil {
		t.Fatal("a value that is not a counter was added up")
	}
}
