// Package cptest runs the control plane's identity stack in-process for tests: a CA in a
// temporary data directory, the control plane's own SVID, and the certificate service on a
// loopback TLS gRPC server with an OS-chosen port, all stopped at the end of the test.
package cptest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certsvc"
)

// TrustDomain is the trust domain test control planes serve.
var TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// Options adjust a test control plane.
type Options struct {
	// DataDir to use (to restart on the same state); a new temporary one when empty.
	DataDir string
	// SVIDTTL is the SVID lifetime (default 1h).
	SVIDTTL time.Duration
	// Addr to listen on (default 127.0.0.1:0).
	Addr string
	// ReloadInterval for rotations and revocations (default 50ms).
	ReloadInterval time.Duration
	// Quiet drops the logs instead of keeping them for failure output.
	Quiet bool
	// Meter receives the CA's and the service's metrics.
	Meter metric.Meter
	// ServiceAccounts, when set, lets the service accept Kubernetes service-account tokens.
	ServiceAccounts certsvc.ServiceAccountVerifier
	// TracerProvider receives the service's spans.
	TracerProvider trace.TracerProvider
}

// ControlPlane is a running test control plane.
type ControlPlane struct {
	DataDir string
	Addr    string
	CA      *ca.CA
	Self    *ca.SelfSource
	Key     ed25519.PrivateKey
	Logs    *Buffer
	used    *attest.UsedTokens
	srv     *grpc.Server
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

// Start runs a control plane until the test ends (or Stop).
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "data")
	}
	if opts.SVIDTTL == 0 {
		opts.SVIDTTL = time.Hour
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.ReloadInterval == 0 {
		opts.ReloadInterval = 50 * time.Millisecond
	}
	logs := &Buffer{}
	var log *slog.Logger
	if opts.Quiet {
		log = slog.New(slog.DiscardHandler)
	} else {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	authority, err := ca.Open(ca.Config{
		DataDir: opts.DataDir, TrustDomain: TrustDomain, SVIDTTL: opts.SVIDTTL,
		IntermediateTTL: max(24*time.Hour, 2*opts.SVIDTTL), RootTTL: max(30*24*time.Hour, 4*opts.SVIDTTL),
		ReloadInterval: opts.ReloadInterval, Logger: log.With("component", "ca"), Meter: opts.Meter,
	})
	if err != nil {
		t.Fatal(err)
	}
	self, err := ca.NewSelfSource(authority, ca.ControlPlaneID(TrustDomain), log)
	if err != nil {
		t.Fatal(err)
	}
	key, err := attest.LoadOrCreateSigningKey(opts.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	used, err := attest.OpenUsedTokens(opts.DataDir, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := certsvc.New(certsvc.Config{
		CA: authority, Tokens: attest.NewVerifier(nil, key.Public().(ed25519.PublicKey)), Used: used,
		ServiceAccounts: opts.ServiceAccounts,
		Logger:          log.With("component", "certsvc"), Meter: opts.Meter, TracerProvider: opts.TracerProvider,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(certsvc.TLSConfig(self, TrustDomain))), grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))))
	svc.Register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	cp := &ControlPlane{DataDir: opts.DataDir, Addr: ln.Addr().String(), CA: authority, Self: self, Key: key,
		Logs: logs, used: used, srv: srv, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	wg.Go(func() { _ = authority.Run(ctx) })
	wg.Go(func() { _ = self.Run(ctx) })
	go func() {
		wg.Wait()
		close(cp.done)
	}()
	t.Cleanup(func() {
		cp.Stop()
		if t.Failed() && !opts.Quiet {
			t.Logf("control plane log:\n%s", logs)
		}
	})
	return cp
}

// Stop stops the control plane and releases its data directory.
func (cp *ControlPlane) Stop() {
	cp.once.Do(func() {
		cp.srv.Stop()
		cp.cancel()
		<-cp.done
		_ = cp.used.Close()
	})
}

// Token creates a join token for id.
func (cp *ControlPlane) Token(t testing.TB, id spiffeid.ID, ttl time.Duration) string {
	t.Helper()
	pins := []string{}
	for _, r := range cp.CA.Roots() {
		pins = append(pins, ca.Pin(r))
	}
	s, _, err := attest.Create(cp.Key, attest.Request{SPIFFEID: id, TTL: ttl, Pins: pins})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Roots returns the bundle's roots.
func (cp *ControlPlane) Roots() []*x509.Certificate { return cp.CA.Roots() }

// Buffer is a log sink safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
