package bootstrap

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
)

const staticBootstrap = `{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}}`

func TestSupervisorRestartsAndStopsEnvoy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Envoy")
	}
	s := &Supervisor{EnvoyPath: envoytest.Require(t), Bootstrap: []byte(staticBootstrap), Dir: t.TempDir(), Args: []string{"--concurrency", "1"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitReady := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for s.Ready(ctx) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("envoy not ready: %v", s.Ready(ctx))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReady()
	s.mu.Lock()
	first := s.cmd.Process.Pid
	s.mu.Unlock()

	// Envoy crashes: the supervisor starts it again.
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Restarts() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("envoy not restarted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitReady()

	// Stopping the agent stops Envoy.
	s.mu.Lock()
	second := s.cmd.Process.Pid
	s.mu.Unlock()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("supervisor did not stop")
	}
	if p, _ := os.FindProcess(second); p.Signal(syscall.Signal(0)) == nil {
		t.Errorf("envoy %d still running after the supervisor stopped", second)
	}
}
