package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// StartTimeout bounds Start: building and importing images and bringing the cluster up.
const StartTimeout = 5 * time.Minute

// Start starts a cluster for a test and stops it when the test ends, failing the test if
// anything of it is left behind. Without the parts (or root) the test fails under CI=true and is
// skipped, loudly, elsewhere. When the test has failed, the tail of every part's log is printed
// before the run directory goes.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireParts(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	c, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && c.StopTime() == 0 { // the logs go with Stop
			t.Logf("cluster logs (%s):%s", c.Dir, c.tails(c.processes()))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
		if left := c.Leftovers(); len(left) > 0 {
			t.Errorf("the cluster left behind:\n%s", strings.Join(left, "\n"))
		}
	})
	return c
}

func (c *Cluster) processes() []*process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*process(nil), c.procs...)
}

// String describes the cluster for messages.
func (c *Cluster) String() string {
	return fmt.Sprintf("cluster %s (KUBECONFIG=%s)", c.Dir, c.Kubeconfig)
}
