package kubestate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca/kubestate"
	"github.com/portcullis/portcullis/test/kubetest"
)

func tokenID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// TestUsedTokensAcrossReplicas: a token used at one replica is refused at another and at a
// restarted one; of concurrent uses exactly one wins; expired records are pruned.
func TestUsedTokensAcrossReplicas(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns = "kubestate-tokens"
	env.Namespace(t, ns, nil)
	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	at := func() time.Time { return *clock.Load() }
	a := kubestate.NewUsedTokens(env.Client, ns, "replica-a", at, nil)
	b := kubestate.NewUsedTokens(env.Client, ns, "replica-b", at, nil)

	id, exp := tokenID(t), now.Add(time.Hour)
	if err := a.Use(id, exp); err != nil {
		t.Fatal(err)
	}
	for name, u := range map[string]*kubestate.UsedTokens{"same replica": a, "other replica": b,
		"restarted replica": kubestate.NewUsedTokens(env.Client, ns, "replica-a", at, nil)} {
		if err := u.Use(id, exp); !errors.Is(err, attest.ErrTokenReused) {
			t.Errorf("%s: reuse gave %v", name, err)
		}
	}
	if err := a.Use("../etc", exp); !errors.Is(err, attest.ErrTokenMalformed) {
		t.Errorf("malformed id: %v", err)
	}

	race := tokenID(t)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		u := []*kubestate.UsedTokens{a, b}[i%2]
		wg.Go(func() {
			switch err := u.Use(race, exp); {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, attest.ErrTokenReused):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent uses of one token accepted", wins.Load())
	}

	short := tokenID(t)
	if err := b.Use(short, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Minute + kubestate.PruneGrace + time.Second)
	clock.Store(&later)
	n, err := a.Prune(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	cms := env.Client.CoreV1().ConfigMaps(ns)
	if _, err := cms.Get(context.Background(), kubestate.UsedTokenPrefix+short, metav1.GetOptions{}); err == nil {
		t.Error("the expired token's record is still there")
	}
	if _, err := cms.Get(context.Background(), kubestate.UsedTokenPrefix+id, metav1.GetOptions{}); err != nil {
		t.Errorf("a live token's record was pruned: %v", err)
	}
}

// BenchmarkUsedTokensUse: one join's cost in the API server (a ConfigMap create), against the
// real API server of the tests.
func BenchmarkUsedTokensUse(b *testing.B) {
	env := kubetest.Require(b, &api)
	const ns = "kubestate-bench"
	env.Namespace(b, ns, nil)
	u := kubestate.NewUsedTokens(env.Client, ns, "bench", nil, nil)
	exp := time.Now().Add(time.Hour)
	ids := make([]string, b.N)
	for i := range ids {
		var raw [16]byte
		if _, err := rand.Read(raw[:]); err != nil {
			b.Fatal(err)
		}
		ids[i] = hex.EncodeToString(raw[:])
	}
	b.ResetTimer()
	for i := range b.N {
		if err := u.Use(ids[i], exp); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := env.Client.CoreV1().ConfigMaps(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: kubestate.UsedTokenLabel}); err != nil {
		b.Fatal(err)
	}
}
