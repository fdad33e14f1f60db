package attack

import (
	"flag"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// outcome is one attack's line in the report.
type outcome struct {
	class, attack, expected, observed string
	held                              bool
}

// report collects the outcomes; attacks of one class may run concurrently.
type report struct {
	mu  sync.Mutex
	out []outcome
}

// check runs one attack: f returns what happened and whether that is what must happen. An attack
// that cannot be carried out (its setup failed) does not hold: a suite that silently stops
// attacking proves nothing.
func (r *report) check(class, attack, expected string, f func() (observed string, held bool)) {
	observed, held := f()
	r.mu.Lock()
	r.out = append(r.out, outcome{class, attack, expected, observed, held})
	r.mu.Unlock()
}

// print logs one line per attack and fails t for every one that did not hold.
func (r *report) print(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	broken := 0
	fmt.Fprintf(&b, "%d attacks:\n", len(r.out))
	for _, o := range r.out {
		verdict := "HELD  "
		if !o.held {
			verdict = "BROKEN"
			broken++
		}
		fmt.Fprintf(&b, "%s %-8s %s | expected: %s | observed: %s\n", verdict, o.class, o.attack, o.expected, oneLine(o.observed))
	}
	t.Log(b.String())
	if broken > 0 {
		t.Errorf("%d of %d attacks did not hold", broken, len(r.out))
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 240 {
		return s[:240] + "..."
	}
	return s
}

// TestAttacks runs every attack against one mesh: a control plane serving ADS, the CA and
// ext_authz (one process, as deployed by default), a backend behind a real Envoy, and the agents
// whose SVIDs the attacker holds. A second control plane with short-lived SVIDs serves the
// attacks on expiry and join tokens, which must restart it.
func TestAttacks(t *testing.T) {
	e := newEnv(t)
	r := &report{}
	t.Cleanup(func() { r.print(t) })

	for _, group := range []struct {
		name string
		run  func(*env, *report)
	}{
		{"method", methodAttacks}, {"header", headerAttacks}, {"path", pathAttacks}, {"identity", identityHeaderAttacks},
		{"jwt", jwtAttacks}, {"check", checkAttacks}, {"rego", regoAttacks}, {"xds", adsAttacks},
		{"revoked", revocationAttacks}, {"csr", certificateAttacks}, {"short", shortLivedAttacks},
		// Last: it reads the logs of everything above.
		{"secrets", secretAttacks},
	} {
		if ok, err := regexp.MatchString(*only, group.name); err != nil {
			t.Fatal(err)
		} else if ok {
			group.run(e, r)
		}
	}
}

// only picks groups of attacks by name, for working on one: go test ./test/attack -args -only rego.
var only = flag.String("only", "", "run only the groups of attacks whose name matches this regular expression")
