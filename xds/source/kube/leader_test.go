package kube_test

import (
	"context"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/xds/source/kube"
)

// TestLeaderElection: of two replicas campaigning for one Lease exactly one leads; when it stops,
// the other leads within the lease duration.
func TestLeaderElection(t *testing.T) {
	env := kubetest.Require(t, &api)
	const ns, lease = "leader", "portcullis-test"
	const leaseDuration = 2 * time.Second
	env.Namespace(t, ns, nil)

	type change struct {
		id      string
		leading bool
		at      time.Time
	}
	changes := make(chan change, 16)
	var mu sync.Mutex
	leading := map[string]bool{}
	most := 0
	type replica struct {
		cancel context.CancelFunc
		done   chan error
	}
	start := func(id string) replica {
		ctx, cancel := context.WithCancel(context.Background())
		r := replica{cancel: cancel, done: make(chan error, 1)}
		go func() {
			r.done <- kube.RunAsLeader(ctx, kube.LeaderOptions{
				Client: env.Client, Namespace: ns, Name: lease, Identity: id,
				LeaseDuration: leaseDuration, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond,
			}, func(ctx context.Context) {
				mu.Lock()
				leading[id] = true
				most = max(most, len(leading))
				mu.Unlock()
				changes <- change{id, true, time.Now()}
				<-ctx.Done()
				mu.Lock()
				delete(leading, id)
				mu.Unlock()
				changes <- change{id, false, time.Now()}
			})
		}()
		return r
	}
	replicas := map[string]replica{"replica-a": start("replica-a"), "replica-b": start("replica-b")}
	t.Cleanup(func() {
		for id, r := range replicas {
			r.cancel()
			select {
			case err := <-r.done:
				if err != nil {
					t.Errorf("%s: %v", id, err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("%s: RunAsLeader did not return after its context ended", id)
			}
		}
	})
	next := func(timeout time.Duration) (change, bool) {
		select {
		case c := <-changes:
			return c, true
		case <-time.After(timeout):
			return change{}, false
		}
	}

	first, ok := next(10 * time.Second)
	if !ok || !first.leading {
		t.Fatalf("no replica leads: %+v", first)
	}
	// Longer than a lease: the leader renews, the other keeps following.
	if c, ok := next(leaseDuration + 500*time.Millisecond); ok {
		t.Fatalf("while %s leads: %+v", first.id, c)
	}
	l, err := env.Client.CoordinationV1().Leases(ns).Get(context.Background(), lease, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != first.id {
		t.Fatalf("lease held by %v, %s leads", l.Spec.HolderIdentity, first.id)
	}

	// The leader stops (a rollout): the other takes over within the lease duration.
	stopped := time.Now()
	r := replicas[first.id]
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	delete(replicas, first.id)
	var took change
	for took.id == "" || took.id == first.id {
		c, ok := next(leaseDuration)
		if !ok {
			t.Fatalf("no replica took over within %s of %s stopping", leaseDuration, first.id)
		}
		if c.id == first.id && c.leading {
			t.Fatalf("%s leads again after it stopped", first.id)
		}
		if c.id != first.id {
			took = c
		}
	}
	if !took.leading || took.at.Sub(stopped) > leaseDuration {
		t.Fatalf("%+v, %s after %s stopped", took, took.at.Sub(stopped), first.id)
	}
	t.Logf("%s led; %s took over %s after it stopped", first.id, took.id, took.at.Sub(stopped).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Errorf("%d replicas led at once", most)
	}
}
