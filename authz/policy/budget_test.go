package policy

import (
	"context"
	"errors"
	"runtime/metrics"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
)

// regoBomb would build a hundred-million-element array (gigabytes) and count it.
const regoBomb = "package bomb\n\nmatch if count([x | some x in numbers.range(1, 100000000)]) > 0\n"

// A module that would run and allocate without end is stopped by the decision's budget and fails
// closed with a reason; what it allocated before is bounded by the budget.
func TestRegoBudgetStopsAnEvaluation(t *testing.T) {
	const budget = 20 * time.Millisecond
	for _, tc := range []struct {
		action string
		code   Code
	}{{"DENY", CodeDenied}, {"ALLOW", CodeDeniedDefault}} {
		t.Run(tc.action, func(t *testing.T) {
			e, ps := NewCompiler(Options{RegoBudget: budget}).Compile(testmesh.Build(t, testmesh.Rego("bomb", tc.action, regoBomb)))
			if ps != nil {
				t.Fatal(ps)
			}
			before := allocated()
			d := e.Decide(context.Background(), request(t))
			grew := allocated() - before
			if d.Allow || d.Code != tc.code || len(d.Errors) != 1 || !strings.Contains(d.Errors[0], "exceeded the decision's Rego budget of 20ms") {
				t.Fatalf("decision %+v", d)
			}
			if tc.action == "DENY" && d.Reason != "rego evaluation exceeded its budget (fail closed)" {
				t.Errorf("reason %q", d.Reason)
			}
			// Unbounded, the array alone is gigabytes; 20ms of evaluation is tens of MiB even
			// under the race detector.
			if grew > 512<<20 {
				t.Errorf("the evaluation allocated %d MiB within a 20ms budget", grew>>20)
			}
			t.Logf("allocated %.1f MiB before the budget stopped it", float64(grew)/(1<<20))
		})
	}
}

// allocated is the bytes the process has allocated on the heap so far.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// At most 2×GOMAXPROCS evaluations run at once; one that cannot get a slot within its budget
// fails with the budget's error rather than queueing without end.
func TestRegoSlotsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newRegoLimits(10 * time.Millisecond)
		var releases []func()
		for range cap(l.slots) {
			release, err := l.acquire(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		in := regoInput{limits: l}
		defer in.release()
		start := time.Now()
		_, err := l.acquire(in.budgetContext(context.Background()))
		if be, ok := errors.AsType[*BudgetError](err); !ok || be.Budget != 10*time.Millisecond || time.Since(start) != 10*time.Millisecond {
			t.Fatalf("acquire with every slot taken: %v after %s", err, time.Since(start))
		}
		releases[0]()
		release, err := l.acquire(context.Background())
		if err != nil {
			t.Fatalf("a freed slot: %v", err)
		}
		release()
	})
}

func TestCheckFormat(t *testing.T) {
	for f, ok := range map[string]bool{
		"%s": true, "%d items": true, "%5.2f": true, "%-10s|": true, "100%%": true, "%[2]s %[1]s": true, "%256d": true,
		"%257d": false, "%.300f": false, "%*d": false, "%.*f": false, "%[1]*d": false, "%08.999f": false,
	} {
		if err := checkFormat(f); (err == nil) != ok {
			t.Errorf("checkFormat(%q) = %v, want ok=%v", f, err, ok)
		}
	}
}
