package appprobe

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

func TestProbesAnswerForTheApplication(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ready":
			if r.Header.Get("X-Probe") != "yes" || r.Host != "app.local" {
				http.Error(w, "headers not passed on", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			http.Error(w, "sick", http.StatusInternalServerError)
		}
	}))
	defer app.Close()
	appPort := port(t, app.Listener.Addr().String())

	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("draining", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	go func() { _ = g.Serve(grpcLn) }()
	defer g.Stop()
	grpcPort := port(t, grpcLn.Addr().String())

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := port(t, closed.Addr().String())
	closed.Close()

	probes := Probes{
		Path("app", "readyz"):    {HTTPGet: &HTTPGet{Path: "/ready", Port: appPort, Headers: []Header{{"X-Probe", "yes"}, {"Host", "app.local"}}}},
		Path("app", "livez"):     {HTTPGet: &HTTPGet{Path: "/sick", Port: appPort}},
		Path("app", "startupz"):  {HTTPGet: &HTTPGet{Path: "moved", Port: appPort}},
		Path("tcp", "readyz"):    {TCPSocket: &TCP{Port: appPort}},
		Path("tcp", "livez"):     {TCPSocket: &TCP{Port: closedPort}},
		Path("grpc", "readyz"):   {GRPC: &GRPC{Port: grpcPort, Service: "shop"}},
		Path("grpc", "livez"):    {GRPC: &GRPC{Port: grpcPort, Service: "draining"}},
		Path("grpc", "startupz"): {GRPC: &GRPC{Port: closedPort}},
	}
	h := probes.Handler()
	for _, tc := range []struct {
		path string
		want int
	}{
		{Path("app", "readyz"), http.StatusOK},
		{Path("app", "livez"), http.StatusServiceUnavailable},
		{Path("app", "startupz"), http.StatusOK}, // 3xx passes and is not followed, as for the kubelet
		{Path("tcp", "readyz"), http.StatusOK},
		{Path("tcp", "livez"), http.StatusServiceUnavailable},
		{Path("grpc", "readyz"), http.StatusOK},
		{Path("grpc", "livez"), http.StatusServiceUnavailable},
		{Path("grpc", "startupz"), http.StatusServiceUnavailable},
		{Path("other", "readyz"), http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("GET %s = %d (%s), want %d", tc.path, rec.Code, strings.TrimSpace(rec.Body.String()), tc.want)
		}
	}
}

func TestParseRefusesWhatTheInjectorNeverWrites(t *testing.T) {
	for _, bad := range []string{
		`{`,
		`{"/elsewhere": {"tcpSocket": {"port": 80}}}`,
		`{"/app-health/a/readyz": {}}`,
		`{"/app-health/a/readyz": {"tcpSocket": {"port": 80}, "grpc": {"port": 80}}}`,
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%s) accepted it", bad)
		}
	}
	ps, err := Parse(`{"/app-health/a/readyz": {"tcpSocket": {"port": 80}}}`)
	if err != nil || ps["/app-health/a/readyz"].TCPSocket.Port != 80 {
		t.Fatalf("Parse = %+v, %v", ps, err)
	}
	if ps, err := Parse(""); err != nil || ps != nil {
		t.Fatalf("Parse of nothing = %v, %v", ps, err)
	}
}
