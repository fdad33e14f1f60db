package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestHTTPServesUntilContextEnds(t *testing.T) {
	ln := listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "up") })}
	done := make(chan error, 1)
	go func() { done <- HTTP(ctx, "test", srv, ln, time.Second) }()
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "up" {
		t.Fatalf("body %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("HTTP after cancel = %v, want nil", err)
	}
	if _, err := http.Get("http://" + ln.Addr().String()); err == nil {
		t.Fatal("server still answering after its context ended")
	}
}

func TestGRPCCutsOpenStreamsAfterGrace(t *testing.T) {
	ln := listen(t)
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- GRPC(ctx, "test", srv, ln, 200*time.Millisecond) }()

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A watch never ends on its own: only the grace period's end can stop the server.
	stream, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("GRPC after cancel = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server with an open stream did not stop after its grace period")
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("stopped after %s: the open stream was not given its grace period", waited)
	}
}

func TestServeErrorIsNamed(t *testing.T) {
	err := Until(t.Context(), "admin", 0, func() error { return errors.New("port in use") }, func(context.Context) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "admin: port in use") {
		t.Fatalf("err = %v, want it to name the server", err)
	}
}
