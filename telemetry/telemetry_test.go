package telemetry

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown","k":"v"`) {
		t.Errorf("log output %q", out)
	}
	if _, err := NewLogger(&buf, "loud", "text"); err == nil || !strings.Contains(err.Error(), `log level "loud"`) {
		t.Errorf("bad level: %v", err)
	}
	if _, err := NewLogger(&buf, "info", "xml"); err == nil || !strings.Contains(err.Error(), `log format "xml"`) {
		t.Errorf("bad format: %v", err)
	}
}

func TestAdminReadinessAndMetrics(t *testing.T) {
	m, err := NewMetrics("test", "v0")
	if err != nil {
		t.Fatal(err)
	}
	counter, err := m.Meter("test").Int64Counter("portcullis_test_events")
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(t.Context(), 3)
	a := NewAdmin(slog.New(slog.DiscardHandler), m)
	var ready atomic.Bool
	a.AddReadiness("mesh", func() error {
		if !ready.Load() {
			return errors.New("no mesh yet")
		}
		return nil
	})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "mesh: no mesh yet") {
		t.Errorf("/readyz not ready: %d %q", code, body)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz ready: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "portcullis_test_events_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "/readyz") {
		t.Errorf("index: %d %q", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
}

func TestAdminDebugPagesAnswerLoopbackOnly(t *testing.T) {
	a := NewAdmin(slog.New(slog.DiscardHandler), nil)
	a.Handle("/debug/mesh", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "the mesh") }))
	for _, tc := range []struct {
		remote, path string
		want         int
	}{
		{"127.0.0.1:40000", "/debug/mesh", http.StatusOK},
		{"[::1]:40000", "/debug/mesh", http.StatusOK},
		{"10.244.0.7:40000", "/debug/mesh", http.StatusForbidden}, // another pod, through the Service
		{"[fd00::7]:40000", "/debug/mesh", http.StatusForbidden},
		{"10.244.0.7:40000", "/healthz", http.StatusOK}, // probes come from the node
		{"10.244.0.7:40000", "/readyz", http.StatusOK},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("GET %s from %s: %d, want %d", tc.path, tc.remote, rec.Code, tc.want)
		}
		if tc.want == http.StatusForbidden && strings.Contains(rec.Body.String(), "the mesh") {
			t.Errorf("GET %s from %s leaked the page", tc.path, tc.remote)
		}
	}
}
