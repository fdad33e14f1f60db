package kubestate_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/ca/kubestate"
	"github.com/portcullis/portcullis/test/kubetest"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

var td = spiffeid.RequireTrustDomainFromString("kubestate.example")

// logBuf collects a replica's log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// replica is one control plane's CA side, as cmd/internal/controlplane assembles it: the
// Secret's mirror and the CA opened on it, both running until the test ends.
type replica struct {
	dir    string
	shared *kubestate.Replica
	ca     *ca.CA
	logs   *logBuf
}

func startReplica(t *testing.T, env *kubetest.Env, ns, name string, dir string, trust spiffeid.TrustDomain) (*replica, error) {
	t.Helper()
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := ca.Config{DataDir: dir, TrustDomain: trust, SVIDTTL: time.Minute, IntermediateTTL: time.Hour, RootTTL: 24 * time.Hour,
		ReloadInterval: 100 * time.Millisecond, Logger: log}
	shared, err := kubestate.OpenReplica(context.Background(), kubestate.ReplicaOptions{
		Client: env.Client, Namespace: ns, Secret: name, Replica: filepath.Base(dir), CA: cfg, Resync: time.Second, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	authority, err := ca.Open(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{shared.Run, authority.Run} {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				t.Errorf("replica %s: %v", dir, err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Logf("replica %s log:\n%s", dir, logs.String())
		}
	})
	return &replica{dir: dir, shared: shared, ca: authority, logs: logs}, nil
}

func mustReplica(t *testing.T, env *kubetest.Env, ns, name string) *replica {
	t.Helper()
	r, err := startReplica(t, env, ns, name, filepath.Join(t.TempDir(), "data"), td)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sameRoots(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

func svid(t *testing.T, r *replica, path string) *x509.Certificate {
	t.Helper()
	key, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.ca.SignX509SVID(spiffeid.RequireFromPath(td, path), key.Public())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(s.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestReplicasShareTheCA: two replicas starting at once with empty data directories create one
// CA in the Secret and sign under its root; a revocation and a rotation made through the
// Secret (Admin, as `portcullis ca ... --kubernetes` does) reach both within seconds; a replica
// started later with an empty data directory has the same CA, revocations included.
func TestReplicasShareTheCA(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns, name = "kubestate-share", "portcullis-ca"
	env.Namespace(t, ns, nil)
	ctx := context.Background()

	var a, b *replica
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { a, errA = startReplica(t, env, ns, name, filepath.Join(t.TempDir(), "a"), td) })
	wg.Go(func() { b, errB = startReplica(t, env, ns, name, filepath.Join(t.TempDir(), "b"), td) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("starting replicas: %v, %v", errA, errB)
	}
	if len(a.ca.Roots()) != 1 || !sameRoots(a.ca.Roots(), b.ca.Roots()) {
		t.Fatal("the replicas started with different roots")
	}
	if !a.shared.TokenKey().Equal(b.shared.TokenKey()) {
		t.Fatal("the replicas verify join tokens with different keys")
	}
	// Each SVID chains to the shared root through its replica's own intermediate.
	pool := x509.NewCertPool()
	pool.AddCert(a.ca.Roots()[0])
	for _, r := range []*replica{a, b} {
		key, _ := ca.NewKey()
		s, err := r.ca.SignX509SVID(spiffeid.RequireFromPath(td, "/ns/shop/sa/web"), key.Public())
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(s.Chain[0])
		mid, _ := x509.ParseCertificate(s.Chain[1])
		inter := x509.NewCertPool()
		inter.AddCert(mid)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("replica %s: SVID does not verify with the shared root: %v", r.dir, err)
		}
	}

	admin := &kubestate.Admin{Client: env.Client, Namespace: ns, Secret: name}
	revoked := svid(t, a, "/ns/shop/sa/web")
	if _, err := admin.Revoke(ctx, revoked.SerialNumber, spiffeid.ID{}, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	byID := spiffeid.RequireFromPath(td, "/ns/shop/sa/db")
	dbCert := svid(t, b, byID.Path())
	if _, err := admin.Revoke(ctx, nil, byID, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{a, b} {
		eventually(t, "replica "+r.dir+" refuses the revoked SVIDs", func() error {
			if !r.ca.RevokedCert(revoked) || !r.ca.RevokedCert(dbCert) {
				return errors.New("not revoked yet")
			}
			return nil
		})
	}

	p, err := admin.Rotate(ctx, ca.RotateOptions{ActivateAfter: time.Hour})
	if err != nil || p.Phase != ca.PhasePrepared {
		t.Fatalf("rotate: %+v, %v", p, err)
	}
	for _, r := range []*replica{a, b} {
		eventually(t, "replica "+r.dir+" has the prepared root in its bundle", func() error {
			if n := len(r.ca.Roots()); n != 2 {
				return fmt.Errorf("%d roots", n)
			}
			return nil
		})
	}
	if !sameRoots(a.ca.Roots(), b.ca.Roots()) {
		t.Fatal("the replicas' bundles differ after the rotation")
	}
	st, err := admin.Status(ctx, time.Now())
	if err != nil || len(st.Authorities) != 2 || st.Authorities[1].Phase != ca.PhasePrepared || st.Authorities[0].IntermediateNote != kubestate.IntermediateNote {
		t.Fatalf("status: %+v, %v", st, err)
	}

	// A replica restarted with an empty data directory: the same CA, revocations included.
	c := mustReplica(t, env, ns, name)
	if !sameRoots(c.ca.Roots(), a.ca.Roots()) || !c.ca.RevokedCert(revoked) || !c.ca.RevokedCert(dbCert) {
		t.Fatal("a new replica does not have the shared CA's roots and revocations")
	}
	if mirrored, err := kubestate.MirroredSecret(c.dir); err != nil || mirrored != ns+"/"+name {
		t.Fatalf("mirror marker: %q, %v", mirrored, err)
	}
}

// TestConcurrentAdminsLoseNothing: revocations written at the same time by several operators
// all land (each write carries the resourceVersion it read and starts over on a conflict).
func TestConcurrentAdminsLoseNothing(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns, name = "kubestate-concurrent", "portcullis-ca"
	env.Namespace(t, ns, nil)
	r := mustReplica(t, env, ns, name)
	var serials []*big.Int
	for range 12 {
		serials = append(serials, svid(t, r, "/ns/shop/sa/web").SerialNumber)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(serials))
	for i, s := range serials {
		admin := &kubestate.Admin{Client: env.Client, Namespace: ns, Secret: name}
		wg.Go(func() {
			if _, err := admin.Revoke(context.Background(), s, spiffeid.ID{}, fmt.Sprint("operator ", i), time.Now()); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fresh := mustReplica(t, env, ns, name)
	for _, s := range serials {
		if !fresh.ca.Revoked(s) {
			t.Errorf("revocation of %s lost", s.Text(16))
		}
	}
}

// TestSecretProblems: what a replica does with a Secret it cannot use or that changes under it.
func TestSecretProblems(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns = "kubestate-problems"
	env.Namespace(t, ns, nil)
	ctx := context.Background()
	secrets := env.Client.CoreV1().Secrets(ns)

	t.Run("earlier layout refused", func(t *testing.T) {
		certPEM, keyPEM, err := ca.NewRootPEM(td, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err = startReplica(t, env, ns, "legacy", filepath.Join(t.TempDir(), "data"), td)
		if err == nil || !strings.Contains(err.Error(), "bare root") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("another trust domain refused", func(t *testing.T) {
		mustReplica(t, env, ns, "td")
		_, err := startReplica(t, env, ns, "td", filepath.Join(t.TempDir(), "data"), spiffeid.RequireTrustDomainFromString("other.example"))
		if err == nil || !strings.Contains(err.Error(), `is for trust domain "kubestate.example", the Mesh says "other.example"`) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("invalid edit keeps the last good state", func(t *testing.T) {
		r := mustReplica(t, env, ns, "invalid")
		state := filepath.Join(r.dir, ca.DirName, ca.StateFile)
		good, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		sec, err := secrets.Get(ctx, "invalid", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data[ca.StateFile] = []byte(`{"version": 1, "trustDomain": "kubestate.example", "authorities": []}`)
		if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the invalid Secret reported", func() error {
			if !strings.Contains(r.logs.String(), "the CA Secret changed to something invalid") {
				return errors.New("no report")
			}
			return nil
		})
		if now, _ := os.ReadFile(state); !bytes.Equal(now, good) {
			t.Fatalf("the invalid state was mirrored:\n%s", now)
		}
		if _, err := r.ca.SignX509SVID(spiffeid.RequireFromPath(td, "/ns/a/sa/b"), mustKey(t).Public()); err != nil {
			t.Fatalf("the CA stopped signing: %v", err)
		}
	})

	t.Run("a Secret deleted before the replica watches is recreated", func(t *testing.T) {
		// The informer's first list then finds nothing and sends no delete event (found by a
		// make test run on a loaded machine).
		dir := filepath.Join(t.TempDir(), "data")
		cfg := ca.Config{DataDir: dir, TrustDomain: td, SVIDTTL: time.Minute, IntermediateTTL: time.Hour, RootTTL: 24 * time.Hour}
		shared, err := kubestate.OpenReplica(ctx, kubestate.ReplicaOptions{
			Client: env.Client, Namespace: ns, Secret: "deleted-early", Replica: "early", CA: cfg, Resync: time.Hour,
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := secrets.Delete(ctx, "deleted-early", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- shared.Run(rctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		eventually(t, "the Secret recreated", func() error {
			_, err := secrets.Get(ctx, "deleted-early", metav1.GetOptions{})
			return err
		})
	})
	t.Run("deleted Secret recreated from the mirror", func(t *testing.T) {
		r := mustReplica(t, env, ns, "deleted")
		before, err := secrets.Get(ctx, "deleted", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := secrets.Delete(ctx, "deleted", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the Secret recreated", func() error {
			after, err := secrets.Get(ctx, "deleted", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if after.UID == before.UID {
				return errors.New("not deleted yet")
			}
			for k, v := range before.Data {
				if !bytes.Equal(after.Data[k], v) {
					return fmt.Errorf("key %s differs", k)
				}
			}
			return nil
		})
		if fresh := mustReplica(t, env, ns, "deleted"); !sameRoots(fresh.ca.Roots(), r.ca.Roots()) {
			t.Fatal("a replica started after the deletion has another root")
		}
	})

	t.Run("local edit restored", func(t *testing.T) {
		r := mustReplica(t, env, ns, "local")
		revoked := filepath.Join(r.dir, ca.DirName, ca.RevokedFile)
		for range 2 { // the second edit comes after the watch's first event: the resync undoes it
			if err := os.WriteFile(revoked, []byte(`{"version":1,"entries":[]}`), 0o600); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the local edit undone", func() error {
				if _, err := os.Stat(revoked); err == nil {
					return errors.New("revoked.json still there")
				}
				return nil
			})
		}
	})

	t.Run("admin without a CA", func(t *testing.T) {
		admin := &kubestate.Admin{Client: env.Client, Namespace: ns, Secret: "missing"}
		if _, err := admin.Rotate(ctx, ca.RotateOptions{}); !errors.Is(err, ca.ErrNoCA) {
			t.Fatalf("rotate: %v", err)
		}
		if _, err := admin.Status(ctx, time.Now()); !errors.Is(err, ca.ErrNoCA) || !strings.Contains(err.Error(), ns+"/missing") {
			t.Fatalf("status: %v", err)
		}
		if _, err := secrets.Get(ctx, "missing", metav1.GetOptions{}); err == nil {
			t.Fatal("an operator command created the Secret")
		}
	})
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestUserProvidedCAShared: replicas started with the same --ca-cert/--ca-key record it once in
// the Secret (its certificate only: the key stays in the replicas' files) and sign under it; a
// replica started without it refuses, as in local mode.
func TestUserProvidedCAShared(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns, name = "kubestate-upstream", "portcullis-ca"
	env.Namespace(t, ns, nil)
	certPEM, keyPEM, err := ca.NewRootPEM(td, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	certFile, keyFile := filepath.Join(files, "ca.crt"), filepath.Join(files, "ca.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	given, _, err := ca.DecodePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	start := func(upstream bool) (*replica, error) {
		cfg := ca.Config{DataDir: filepath.Join(t.TempDir(), "data"), TrustDomain: td, SVIDTTL: time.Minute, IntermediateTTL: time.Hour, RootTTL: 24 * time.Hour}
		if upstream {
			cfg.UpstreamCert, cfg.UpstreamKey = certFile, keyFile
		}
		shared, err := kubestate.OpenReplica(context.Background(), kubestate.ReplicaOptions{Client: env.Client, Namespace: ns, Secret: name, CA: cfg})
		if err != nil {
			return nil, err
		}
		authority, err := ca.Open(cfg)
		if err != nil {
			return nil, err
		}
		return &replica{dir: cfg.DataDir, shared: shared, ca: authority}, nil
	}
	a, err := start(true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := start(true)
	if err != nil {
		t.Fatal(err)
	}
	if !sameRoots(a.ca.Roots(), given) || !sameRoots(b.ca.Roots(), given) {
		t.Fatal("the replicas do not sign under the given root")
	}
	sec, err := env.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k, v := range sec.Data {
		if strings.HasSuffix(k, kubestate.RootSuffix) {
			n++
			if certs, key, err := ca.DecodePEM(v); err != nil || key != nil || len(certs) != 1 || !certs[0].Equal(given[0]) {
				t.Errorf("%s: the given root with no key expected (key %v, %v)", k, key != nil, err)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d authorities recorded for one --ca-cert", n)
	}
	if _, err := start(false); err == nil || !strings.Contains(err.Error(), "came from --ca-cert") {
		t.Fatalf("a replica without --ca-cert: %v", err)
	}
}

// TestReplicaWritesOnlyItsDataDir: in deploy/ the control plane's root filesystem is read-only
// and only its data directory is writable, so a replica makes its scratch copies there (and
// removes those a crash left), never in the system's temporary directory.
func TestReplicaWritesOnlyItsDataDir(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns, name = "kubestate-readonly", "portcullis-ca"
	env.Namespace(t, ns, nil)
	dir := filepath.Join(t.TempDir(), "data")
	leftover := filepath.Join(dir, ".ca-scratch-crashed")
	if err := os.MkdirAll(leftover, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", filepath.Join(dir, "no-such-directory")) // any use of os.TempDir fails
	r, err := startReplica(t, env, ns, name, dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); err == nil {
		t.Error("a scratch copy left by a crash is still there")
	}
	// A change from elsewhere is checked in a scratch copy before it is mirrored.
	revoked := svid(t, r, "/ns/shop/sa/web")
	now := time.Now().UTC()
	list := fmt.Sprintf(`{"version": 1, "entries": [{"serial": %q, "revokedAt": %q, "keepUntil": %q}]}`,
		revoked.SerialNumber.Text(16), now.Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
	secrets := env.Client.CoreV1().Secrets(ns)
	sec, err := secrets.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[ca.RevokedFile] = []byte(list)
	if _, err := secrets.Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revocation mirrored", func() error {
		if !r.ca.Revoked(revoked.SerialNumber) {
			return errors.New("not revoked yet")
		}
		return nil
	})
	if left, _ := filepath.Glob(filepath.Join(dir, ".ca-scratch-*")); len(left) > 0 {
		t.Errorf("scratch copies left behind: %v", left)
	}
}
