package appprobe

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Env is the agent's environment variable through which the injector hands it the original
// probes (JSON of Probes).
const Env = "PORTCULLIS_APP_PROBES"

// PathPrefix is where the agent's admin port serves rewritten probes.
const PathPrefix = "/app-health/"

// Path is the agent path a container's probe of a kind (livez, readyz, startupz) is rewritten to.
func Path(container, kind string) string { return PathPrefix + container + "/" + kind }

// Probe is one original application probe, with named ports already resolved.
type Probe struct {
	HTTPGet   *HTTPGet `json:"httpGet,omitempty"`
	TCPSocket *TCP     `json:"tcpSocket,omitempty"`
	GRPC      *GRPC    `json:"grpc,omitempty"`
	// TimeoutSeconds bounds the probe (1 unless set, as for the kubelet).
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
}

// HTTPGet is an HTTP probe: 2xx and 3xx pass.
type HTTPGet struct {
	Path    string   `json:"path,omitempty"`
	Port    int32    `json:"port"`
	HTTPS   bool     `json:"https,omitempty"`
	Headers []Header `json:"headers,omitempty"`
}

// Header is an HTTP header a probe sends.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCP is a TCP probe: the connection opening passes.
type TCP struct {
	Port int32 `json:"port"`
}

// GRPC is a gRPC health probe: SERVING passes.
type GRPC struct {
	Port    int32  `json:"port"`
	Service string `json:"service,omitempty"`
}

// Probes are the rewritten probes of a pod, by agent path.
type Probes map[string]Probe

// Parse reads the probes the injector wrote (JSON); "" is none.
func Parse(s string) (Probes, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ps Probes
	if err := json.Unmarshal([]byte(s), &ps); err != nil {
		return nil, fmt.Errorf("appprobe: %w", err)
	}
	for path, p := range ps {
		if !strings.HasPrefix(path, PathPrefix) {
			return nil, fmt.Errorf("appprobe: %q is not under %s", path, PathPrefix)
		}
		n := 0
		for _, set := range []bool{p.HTTPGet != nil, p.TCPSocket != nil, p.GRPC != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("appprobe: %s: exactly one of httpGet, tcpSocket and grpc", path)
		}
	}
	return ps, nil
}

// Handler serves the probes: 200 when the application's probe passes, 503 (with the reason)
// when it fails, 404 for a path no probe was rewritten to.
func (ps Probes) Handler() http.Handler {
	client := &http.Client{
		// Like the kubelet: no certificate check, no redirects followed (3xx passes).
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}, //nolint:gosec // probes do not verify, as the kubelet's do not
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := ps[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		var err error
		switch {
		case p.HTTPGet != nil:
			err = probeHTTP(ctx, client, p.HTTPGet)
		case p.TCPSocket != nil:
			err = probeTCP(ctx, p.TCPSocket.Port)
		case p.GRPC != nil:
			err = probeGRPC(ctx, p.GRPC)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

func local(port int32) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) }

func probeHTTP(ctx context.Context, client *http.Client, g *HTTPGet) error {
	scheme := "http"
	if g.HTTPS {
		scheme = "https"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+local(g.Port)+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/portcullis")
	for _, h := range g.Headers {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe on port %d: %s", g.Port, resp.Status)
	}
	return nil
}

func probeTCP(ctx context.Context, port int32) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", local(port))
	if err != nil {
		return err
	}
	return conn.Close()
}

func probeGRPC(ctx context.Context, g *GRPC) error {
	conn, err := grpc.NewClient(local(g.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.Service})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC probe on port %d: %s", g.Port, resp.GetStatus())
	}
	return nil
}
