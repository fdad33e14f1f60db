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
