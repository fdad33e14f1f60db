package agent_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/identity/internal/cptest"
)

var web = spiffeid.RequireFromPath(cptest.TrustDomain, "/ns/shop/sa/web")

type runningAgent struct {
	*agent.Agent
	dir  string
	logs *cptest.Buffer
	stop func()
}

// startAgent runs an agent against addr with token until the test ends (or stop).
func startAgent(t *testing.T, addr, token string, cfg agent.Config) *runningAgent {
	t.Helper()
	if cfg.SocketDir == "" {
		cfg.SocketDir = filepath.Join(t.TempDir(), "sockets")
	}
	if cfg.TokenFile == "" && token != "" {
		cfg.TokenFile = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(cfg.TokenFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.ControlPlane = addr
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
	}
	logs := &cptest.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs)
		}
	})
	return &runningAgent{Agent: a, dir: cfg.SocketDir, logs: logs, stop: stop}
}

func waitReady(t *testing.T, a *runningAgent) *agent.Identity {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for a.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v", a.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	id, _ := a.Current()
	return id
}

func socketAddr(a *runningAgent, name string) string { return "unix://" + filepath.Join(a.dir, name) }

// TestWorkloadAPIClient: go-spiffe's X509Source gets the SVID, its chain verifies to the bundle,
// and a rotation arrives on the stream.
func TestWorkloadAPIClient(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{SVIDTTL: 3 * time.Second})
	a := startAgent(t, cp.Addr, cp.Token(t, web, time.Hour), agent.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(socketAddr(a, agent.WorkloadSocket))))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != web {
		t.Fatalf("SVID for %s, want %s", svid.ID, web)
	}
	id, _, err := x509svid.Verify(svid.Certificates, src)
	if err != nil || id != web {
		t.Fatalf("chain does not verify to the Workload API's bundle: %v", err)
	}
	if b, err := src.GetX509BundleForTrustDomain(cptest.TrustDomain); err != nil || !b.X509Authorities()[0].Equal(cp.Roots()[0]) {
		t.Fatalf("bundle: %v", err)
	}
	first := svid.Certificates[0].SerialNumber
	rotated := make(chan *x509svid.SVID, 1)
	go func() {
		for ctx.Err() == nil {
			s, err := src.GetX509SVID()
			if err == nil && s.Certificates[0].SerialNumber.Cmp(first) != 0 {
				rotated <- s
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case s := <-rotated:
		if s.ID != web || !s.Certificates[0].NotAfter.After(svid.Certificates[0].NotAfter) {
			t.Fatalf("rotated SVID %s expires %s", s.ID, s.Certificates[0].NotAfter)
		}
	case <-ctx.Done():
		t.Fatal("no rotation arrived on the Workload API stream")
	}
	// FetchX509Bundles answers too.
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(socketAddr(a, agent.WorkloadSocket)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	set, err := c.FetchX509Bundles(ctx)
	if err != nil || set.Len() != 1 {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
}

// TestWorkloadAPIRequiresHeader: the specification's security header is enforced.
func TestWorkloadAPIRequiresHeader(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	a := startAgent(t, cp.Addr, cp.Token(t, web, time.Hour), agent.Config{})
	waitReady(t, a)
	conn, err := grpc.NewClient(socketAddr(a, agent.WorkloadSocket), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	stream, err := c.FetchX509SVID(context.Background(), &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "security header") {
		t.Fatalf("without the header: %v", err)
	}
	bs, err := c.FetchX509Bundles(context.Background(), &workload.X509BundlesRequest{})
	if err == nil {
		_, err = bs.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bundles without the header: %v", err)
	}
}

func TestSocketAndStateModes(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	a := startAgent(t, cp.Addr, cp.Token(t, web, time.Hour), agent.Config{})
	waitReady(t, a)
	for path, want := range map[string]fs.FileMode{
		a.dir:                                 0o750,
		filepath.Join(a.dir, agent.SDSSocket): 0o660,
		filepath.Join(a.dir, agent.WorkloadSocket):     0o660,
		filepath.Join(a.dir, "state"):                  0o700,
		filepath.Join(a.dir, "state", "identity.json"): 0o600,
	} {
		eventuallyMode(t, path, want)
	}
}

func eventuallyMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.Stat(path)
		if err == nil && st.Mode().Perm() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: mode %v, %v; want %v", path, st.Mode().Perm(), err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRetriesUntilControlPlaneUp: the agent is not ready while the control plane is unreachable,
// retries with backoff, and becomes ready once it is up.
func TestRetriesUntilControlPlaneUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// The token needs the pins of a CA that does not run yet: make the CA first, stop it, and
	// bring it back on the agent's address.
	dataDir := filepath.Join(t.TempDir(), "data")
	first := cptest.Start(t, cptest.Options{DataDir: dataDir})
	token := first.Token(t, web, time.Hour)
	first.Stop()

	a := startAgent(t, addr, token, agent.Config{})
	time.Sleep(500 * time.Millisecond)
	if a.Ready() == nil {
		t.Fatal("ready without a control plane")
	}
	if n := strings.Count(a.logs.String(), "could not obtain an SVID"); n < 2 {
		t.Fatalf("%d attempts in 500ms, want retries", n)
	}
	cptest.Start(t, cptest.Options{DataDir: dataDir, Addr: addr})
	if id := waitReady(t, a); id.ID() != web {
		t.Fatalf("identity %s", id.ID())
	}
	// The line is logged when the identity is published, just after it becomes current.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(a.logs.String(), "agent ready"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no readiness log line")
		}
	}
}

// TestKeepsServingUntilExpiry: with the control plane gone the agent serves its SVID until it
// expires, then stops reporting ready.
func TestKeepsServingUntilExpiry(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{SVIDTTL: 2 * time.Second})
	a := startAgent(t, cp.Addr, cp.Token(t, web, time.Hour), agent.Config{})
	id := waitReady(t, a)
	cp.Stop()
	time.Sleep(time.Until(id.RenewAt()) + 300*time.Millisecond)
	if err := a.Ready(); err != nil {
		t.Fatalf("not ready before expiry: %v", err)
	}
	if !strings.Contains(a.logs.String(), "still serving the current SVID") {
		t.Error("renewal failure not logged")
	}
	time.Sleep(time.Until(id.NotAfter()) + 500*time.Millisecond)
	if err := a.Ready(); err == nil {
		t.Fatal("still ready after the SVID expired")
	}
}

// TestRestartRenewsWithPersistedSVID: a restarted agent renews over mTLS with the SVID it kept
// in the socket directory, although it has no token any more.
func TestRestartRenewsWithPersistedSVID(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{SVIDTTL: 4 * time.Second})
	dir := filepath.Join(t.TempDir(), "sockets")
	a := startAgent(t, cp.Addr, cp.Token(t, web, time.Hour), agent.Config{SocketDir: dir})
	first := waitReady(t, a)
	a.stop()

	b := startAgent(t, cp.Addr, "", agent.Config{SocketDir: dir, TokenFile: filepath.Join(t.TempDir(), "missing")})
	id := waitReady(t, b)
	if id.ID() != web || !strings.Contains(b.logs.String(), "loaded persisted SVID") {
		t.Fatalf("restart did not start from the persisted SVID:\n%s", b.logs)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, _ := b.Current()
		if cur != nil && cur.Leaf().SerialNumber.Cmp(first.Leaf().SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("persisted SVID not renewed over mTLS")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(b.logs.String(), "token file") {
		t.Fatalf("renewal fell back to the token:\n%s", b.logs)
	}
}

// TestNoPersistRestartNeedsNewToken: without persistence a restart must join again, and a spent
// token is refused with a clear log line.
func TestNoPersistRestartNeedsNewToken(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	tok := cp.Token(t, web, time.Hour)
	dir := filepath.Join(t.TempDir(), "sockets")
	a := startAgent(t, cp.Addr, tok, agent.Config{SocketDir: dir, NoPersist: true})
	waitReady(t, a)
	a.stop()
	if _, err := os.Stat(filepath.Join(dir, "state", "identity.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("state written without persistence: %v", err)
	}
	b := startAgent(t, cp.Addr, tok, agent.Config{SocketDir: dir, NoPersist: true})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.logs.String(), "already used") {
		if time.Now().After(deadline) {
			t.Fatalf("reused token not reported:\n%s", b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b.Ready() == nil {
		t.Fatal("ready with a spent token")
	}
	if strings.Contains(b.logs.String(), tok[len(tok)-20:]) {
		t.Fatal("the token appears in the agent's log")
	}
}
