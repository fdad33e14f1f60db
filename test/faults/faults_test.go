package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
)

var faultDuration = flag.Duration("fault-duration", 0, "load time of each fault; 0 runs the short suite (each fault's minimum)")

// rate is the steady load every fault runs under, in requests per second.
const rate = 300

// loadTime is how long a fault's load runs: the flag, or the fault's minimum (the short suite).
func loadTime(minimum time.Duration) time.Duration { return max(*faultDuration, minimum) }

// outcome is what one request got.
type outcome struct {
	status   int
	decision string // x-portcullis-decision-id
	detail   string // the start of the body of a response other than 200, which says who refused
}

// run is one fault's load: every request with when it was due, sent and answered.
type run struct {
	loadgen.Result
	outcomes []outcome
	paths    []string
}

// sample returns the j-th measured request and its outcome.
func (r *run) sample(j int) (loadgen.Sample, outcome, string) {
	i := r.Index(j)
	return r.Samples[j], r.outcomes[i], r.paths[i]
}

// load sends rate requests per second for d through the frontend's outbound listener — request
// i to path(i), with a bearer token when token(i) is set — while fault runs, and returns every
// response. fault starts with the load (faults sleep into it) and runs on the test goroutine; a
// failure in it stops the load.
func (s *suite) load(t *testing.T, d time.Duration, path func(i int) (string, string), fault func()) *run {
	t.Helper()
	n := int(rate * d.Seconds())
	r := &run{outcomes: make([]outcome, n), paths: make([]string, n)}
	do := func(ctx context.Context, i int) error {
		p, token := path(i)
		r.paths[i] = p
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.outbound+p, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		r.outcomes[i] = outcome{status: resp.StatusCode, decision: resp.Header.Get("x-portcullis-decision-id")}
		if resp.StatusCode != http.StatusOK {
			r.outcomes[i].detail = fmt.Sprint(string(body[:min(len(body), 160)]), resp.Header)
		}
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return &loadgen.StatusError{Status: resp.StatusCode}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		res, err := loadgen.Fixed{Rate: rate, Duration: d}.Run(ctx, do)
		r.Result = res
		done <- err
	}()
	defer func() {
		// A fault that failed the test stops the load; one that finished waits for it.
		if t.Failed() {
			cancel()
		}
		if err := <-done; err != nil && !t.Failed() {
			t.Errorf("load: %v", err)
		}
		cancel()
	}()
	fault()
	return r
}

// report records a fault's line: requests sent; succeeded (200); denied by a policy (401 or
// 403 with a decision id: the answer the policy gives, as the expectation says); failed
// (anything else: 5xx, no response); and the expectation.
func (s *suite) report(name string, r *run, expect string) {
	var ok, denied int
	for j := range r.Samples {
		switch _, out, _ := r.sample(j); {
		case out.status == http.StatusOK:
			ok++
		case (out.status == http.StatusForbidden || out.status == http.StatusUnauthorized) && out.decision != "":
			denied++
		}
	}
	sent := len(r.Samples)
	line := fmt.Sprintf("%-25s sent %6d  succeeded %6d  denied %5d  failed %5d  expect: %s", name, sent, ok, denied, sent-ok-denied, expect)
	s.lines = append(s.lines, line)
}

func api(int) (string, string) { return "/api/items", "" }

// TestFaults injects each fault under steady load and counts every response.
func TestFaults(t *testing.T) {
	s := newSuite(t)
	defer func() {
		t.Logf("fault suite at %d requests/s (SVID TTL %s):\n%s", rate, svidTTL, strings.Join(s.lines, "\n"))
	}()
	// Order matters only for the last one: it kills a backend instance for good.
	t.Run("SVID rotation", s.rotation)
	t.Run("control plane killed", s.controlPlaneKilled)
	t.Run("policy change", s.policyChange)
	t.Run("authz down, fail closed", func(t *testing.T) { s.authzDown(t, false) })
	t.Run("authz down, fail open", func(t *testing.T) { s.authzDown(t, true) })
	t.Run("JWKS endpoint down", s.jwksDown)
	t.Run("invalid documents", s.invalidDocuments)
	t.Run("backend instance killed", s.backendKilled)
}

// Every agent renews its SVID at half of its 8 s life; Envoy takes the new one over SDS and the
// peer keeps verifying it: no request may fail.
func (s *suite) rotation(t *testing.T) {
	agents := append([]*meshtest.Agent{s.frontend, s.authzAgent}, s.backends...)
	before := make([]int, len(agents))
	for i, a := range agents {
		before[i] = a.P.Count("SVID obtained")
	}
	r := s.load(t, loadTime(9*time.Second), api, func() {})
	var rotated []string
	for i, a := range agents {
		n := a.P.Count("SVID obtained") - before[i]
		rotated = append(rotated, fmt.Sprintf("%s %d", a.P.Name, n))
		if n < 2 {
			t.Errorf("%s rotated its SVID %d times during the run; want at least 2", a.P.Name, n)
		}
	}
	s.report("SVID rotation", r, "0 failed; rotations: "+strings.Join(rotated, ", "))
	if r.Errors() > 0 {
		s.logFailures(t, r, r.Samples[0].Due)
		t.Errorf("%d requests failed across SVID rotations (first: %v)", r.Errors(), firstError(r))
	}
}

// SIGKILL the control plane: proxies keep serving on their last configuration, resync with the
// restarted process, and a policy change made after the restart reaches them.
func (s *suite) controlPlaneKilled(t *testing.T) {
	var resync, applied time.Duration
	d := loadTime(10 * time.Second)
	r := s.load(t, d, api, func() {
		time.Sleep(d / 5)
		s.c.CP.Kill()
		time.Sleep(2 * time.Second) // proxies run on their last configuration
		restarted := time.Now()
		s.c.StartControlPlane("--svid-ttl", svidTTL)
		proctest.Eventually(t, 30*time.Second, func() error { return s.c.Synced(nodes...) }, "proxies to resync")
		resync = time.Since(restarted)
		s.c.Write("ratelimits.yaml", rateLimitsDoc(true))
		applied = proctest.Eventually(t, 10*time.Second, func() error {
			// One request per instance per hour: three in a row must meet a refusal.
			for range 3 {
				if code, _, err := meshtest.Get(s.outbound + "/api/limited"); err == nil && code == http.StatusTooManyRequests {
					return nil
				}
			}
			return errors.New("no 429 on /api/limited yet")
		}, "the rate limit written after the restart")
	})
	s.report("control plane killed", r, fmt.Sprintf("0 failed; proxies resynced %s after the restart; a rate limit written after it applied in %s",
		resync.Round(time.Millisecond), applied.Round(time.Millisecond)))
	if r.Errors() > 0 {
		s.logFailures(t, r, r.Samples[0].Due)
		t.Errorf("%d requests failed across the control plane's restart (first: %v)", r.Errors(), firstError(r))
	}
}

// Swap which of /flip/a and /flip/b is allowed, in two policies changed together, while
// requests alternate between them. The authorization service's decision log says which mesh
// version decided each request: every version must allow exactly one path (a half-applied
// change would deny both), versions must change once and for good, within 2 s.
func (s *suite) policyChange(t *testing.T) {
	var written time.Time
	d := loadTime(6 * time.Second)
	r := s.load(t, d, func(i int) (string, string) {
		return []string{"/flip/a", "/flip/b"}[i%2], ""
	}, func() {
		time.Sleep(d / 3)
		written = time.Now()
		s.c.Write("policies.yaml", policiesDoc(true))
	})
	versions := s.decisionVersions(t)
	type view struct{ a, b map[int]bool }
	byVersion := map[string]*view{}
	var order []string // versions in the order requests were sent
	var firstNew time.Time
	bad := 0
	for j := range r.Samples {
		smp, out, path := r.sample(j)
		if out.status != http.StatusOK && out.status != http.StatusForbidden {
			bad++
			continue
		}
		v, ok := versions[out.decision]
		if !ok {
			t.Fatalf("%s got %d with decision %q, which is not in the decision log", path, out.status, out.decision)
		}
		if byVersion[v] == nil {
			byVersion[v] = &view{a: map[int]bool{}, b: map[int]bool{}}
			order = append(order, v)
		}
		m := byVersion[v].a
		if path == "/flip/b" {
			m = byVersion[v].b
		}
		m[out.status] = true
		if len(order) > 1 && v == order[1] && (firstNew.IsZero() || smp.Done.Before(firstNew)) {
			firstNew = smp.Done
		}
	}
	if bad > 0 {
		t.Errorf("%d requests got neither 200 nor 403 during the policy change (first: %v)", bad, firstError(r))
	}
	if len(order) != 2 {
		t.Fatalf("requests were decided by %d mesh versions %v; want the old and the new", len(order), order)
	}
	for k, v := range order {
		wantA, wantB := http.StatusOK, http.StatusForbidden
		if k == 1 {
			wantA, wantB = wantB, wantA
		}
		got := byVersion[v]
		if len(got.a) != 1 || !got.a[wantA] || len(got.b) != 1 || !got.b[wantB] {
			t.Errorf("mesh version %d (%s): /flip/a got %v, /flip/b got %v; want only %d and only %d", k, v, keys(got.a), keys(got.b), wantA, wantB)
		}
	}
	// Once a response shows the new version, every request sent after it is decided by it.
	late := 0
	for j := range r.Samples {
		smp, out, _ := r.sample(j)
		if smp.Sent.After(firstNew) && versions[out.decision] == order[0] {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d requests sent after the new policy answered were decided by the old one", late)
	}
	took := firstNew.Sub(written)
	if took > 2*time.Second {
		t.Errorf("the change took %s to apply; want within 2s", took)
	}
	s.report("policy change", r, fmt.Sprintf("0 failed; each 200 or 403 as its deciding version says, never both paths denied; applied in %s (≤ 2s)",
		took.Round(time.Millisecond)))
}

// Kill the authorization service for 2 s and start it again. Failing closed, exactly the
// requests sent while it was down are refused with 503 (an outage, never mistaken for a
// policy's 403); failing open, none is. Envoy recovers on its own: it is never restarted.
func (s *suite) authzDown(t *testing.T, open bool) {
	mode := map[bool]string{false: "CLOSED", true: "OPEN"}[open]
	s.setFailureMode(t, mode)
	if open {
		defer s.setFailureMode(t, "CLOSED")
	}
	envoys := s.envoyStarts()
	// Envoy's own count of failed checks, and of those it let through.
	const errorsStat, allowedStat = "http.inbound.ext_authz.portcullis.error", "http.inbound.ext_authz.portcullis.failure_mode_allowed"
	errorsBefore, allowedBefore := envoyCounter(t, s.backendEnvoys, errorsStat), envoyCounter(t, s.backendEnvoys, allowedStat)
	// The backends' 503s are authorization's outage, not theirs: the caller must not eject them.
	const ejectedStat = "outlier_detection.ejections_enforced_total"
	ejectedBefore := envoyCounter(t, []string{s.frontendEnvoy}, ejectedStat)
	var killed, restarted, ready time.Time
	d := loadTime(6 * time.Second)
	r := s.load(t, d, api, func() {
		time.Sleep(d / 4)
		killed = time.Now()
		s.authz.Kill()
		time.Sleep(2 * time.Second)
		restarted = time.Now()
		s.startAuthz()
		ready = time.Now()
	})
	if got := s.envoyStarts(); got != envoys {
		t.Errorf("Envoy restarts: %s, want %s (none)", got, envoys)
	}
	var before, during, after, straddling, refused, other int
	recovered := time.Time{}
	for j := range r.Samples {
		smp, out, _ := r.sample(j)
		switch out.status {
		case http.StatusOK:
			if smp.Sent.After(ready) && (recovered.IsZero() || smp.Done.Before(recovered)) {
				recovered = smp.Done
			}
		case http.StatusServiceUnavailable:
			refused++
		default:
			other++
		}
		switch {
		case smp.Done.Before(killed):
			before++
			if out.status != http.StatusOK {
				t.Errorf("request %d failed before the outage: %d", j, out.status)
			}
		case smp.Sent.After(killed) && smp.Done.Before(restarted):
			during++
			if want := map[bool]int{false: http.StatusServiceUnavailable, true: http.StatusOK}[open]; out.status != want {
				t.Errorf("request %d sent while authorization was down got %d, want %d (%s)", j, out.status, want, mode)
			}
		case smp.Sent.After(ready.Add(time.Second)):
			after++
			if out.status != http.StatusOK {
				t.Errorf("request %d sent 1s after authorization was back got %d", j, out.status)
			}
		default:
			straddling++ // in flight at the kill, or sent while the service was starting
		}
	}
	if other > 0 {
		t.Errorf("%d responses were neither 200 nor 503 (first: %v)", other, firstError(r))
	}
	if open && r.Errors() > 0 {
		t.Errorf("failing open, %d requests failed (first: %v)", r.Errors(), firstError(r))
	}
	if recovered.IsZero() {
		t.Fatalf("no request succeeded after the authorization service came back")
	}
	checkErrors, letThrough := envoyCounter(t, s.backendEnvoys, errorsStat)-errorsBefore, envoyCounter(t, s.backendEnvoys, allowedStat)-allowedBefore
	if n := envoyCounter(t, []string{s.frontendEnvoy}, ejectedStat) - ejectedBefore; n > 0 {
		t.Errorf("the frontend ejected %d backend instances for answering 503 while authorization was down", n)
	}
	if !open && (checkErrors != refused || letThrough != 0) {
		t.Errorf("Envoy counted %d failed checks and let %d through; want exactly the %d refused and none", checkErrors, letThrough, refused)
	}
	if open && (letThrough != checkErrors || letThrough < during) {
		t.Errorf("Envoy let %d of %d failed checks through; want all, at least the %d sent while authorization was down", letThrough, checkErrors, during)
	}
	expect := fmt.Sprintf("failed = the %d sent while down + %d of %d around the kill/restart, each a failed check (503); recovered %s after restart, no Envoy restart, no instance ejected",
		during, refused-during, straddling, recovered.Sub(ready).Round(time.Millisecond))
	if open {
		expect = fmt.Sprintf("0 failed: the %d failed checks let through (%d sent while down); no Envoy restart, no instance ejected", letThrough, during)
	}
	s.report("authz down, fail "+strings.ToLower(mode), r, expect)
}

// setFailureMode changes the mesh's authorization failure mode and waits until both backend
// Envoys run it. The ext_authz filter's configuration comes over ECDS, and Envoy applies a new
// one to the next request on every connection, those already open included: once applied, it is
// applied everywhere, with no listener to drain.
func (s *suite) setFailureMode(t *testing.T, mode string) {
	t.Helper()
	const modified = "listener_manager.listener_modified"
	listenersBefore := envoyCounter(t, s.backendEnvoys, modified)
	s.c.Write("mesh.yaml", meshDoc(mode))
	open := mode == "OPEN"
	proctest.Eventually(t, 20*time.Second, func() error {
		for _, admin := range s.backendEnvoys {
			_, dump, err := meshtest.Get("http://" + admin + "/config_dump?resource=ecds_filters")
			if err != nil {
				return err
			}
			if !strings.Contains(dump, "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz") {
				return fmt.Errorf("envoy %s: no ext_authz configuration in its ECDS dump", admin)
			}
			if failOpen.MatchString(dump) != open {
				return fmt.Errorf("envoy %s: failure mode not %s yet", admin, mode)
			}
		}
		return s.c.Synced(nodes...)
	}, "failure mode "+mode+" in both backend Envoys")
	if n := envoyCounter(t, s.backendEnvoys, modified) - listenersBefore; n != 0 {
		t.Errorf("the failure mode change replaced %d listeners of the backends; it belongs to ECDS alone", n)
	}
}

// failOpen finds an ext_authz configuration failing open in an Envoy config dump.
var failOpen = regexp.MustCompile(`"failure_mode_allow":\s*true`)

// envoyStarts counts each agent's Envoy starts.
func (s *suite) envoyStarts() string {
	var n []string
	for _, a := range append([]*meshtest.Agent{s.frontend}, s.backends...) {
		n = append(n, strconv.Itoa(a.P.Count("envoy started")))
	}
	return strings.Join(n, ",")
}

// The issuer hangs: tokens signed with a key the service has keep working, fresh ones included
// (not from the token cache); a token with a key id nobody has seen is refused with 401 before
// the proxy gives up on the check; when the issuer is back with the new key, it works.
func (s *suite) jwksDown(t *testing.T) {
	const tokens = 64
	signed := make([]string, tokens)
	for i := range signed {
		c := authztest.Claims(issuer, "user-"+strconv.Itoa(i))
		c["exp"] = time.Now().Add(time.Hour).Unix()
		signed[i] = s.k1.Sign(t, c, nil)
	}
	var down atomic.Bool
	var unknown []int
	var slowest time.Duration
	d := loadTime(6 * time.Second)
	r := s.load(t, d, func(i int) (string, string) {
		// The first half of the tokens before the outage, the second half (never seen) during it.
		k := i % (tokens / 2)
		if down.Load() {
			k += tokens / 2
		}
		return "/jwt/items", signed[k]
	}, func() {
		time.Sleep(d / 4)
		s.jwks.hang()
		down.Store(true)
		c := authztest.Claims(issuer, "mallory")
		c["exp"] = time.Now().Add(time.Hour).Unix()
		newKid := s.k2.Sign(t, c, nil)
		for range 5 {
			start := time.Now()
			code, _, err := meshtest.Do(http.MethodGet, s.outbound+"/jwt/items", http.Header{"Authorization": {"Bearer " + newKid}})
			if err != nil {
				t.Fatal(err)
			}
			slowest = max(slowest, time.Since(start))
			unknown = append(unknown, code)
		}
	})
	for _, code := range unknown {
		if code != http.StatusUnauthorized {
			t.Errorf("tokens with an unknown key id while the issuer hangs got %v; want every one 401", unknown)
			break
		}
	}
	// Back with both keys: the new key id is fetched (retries back off from 1s) and accepted.
	s.jwks.up(authztest.JWKS(s.k1, s.k2))
	c := authztest.Claims(issuer, "bob")
	c["exp"] = time.Now().Add(time.Hour).Unix()
	rotated := s.k2.Sign(t, c, nil)
	back := proctest.Eventually(t, 30*time.Second, func() error {
		code, _, err := meshtest.Do(http.MethodGet, s.outbound+"/jwt/items", http.Header{"Authorization": {"Bearer " + rotated}})
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	}, "a token of the new key once the issuer is back")
	s.report("JWKS endpoint down", r, fmt.Sprintf("0 failed with known keys, fresh tokens included; new kid refused %v within %s; accepted %s after the issuer came back",
		unknown, slowest.Round(time.Millisecond), back.Round(time.Millisecond)))
	if r.Errors() > 0 {
		t.Errorf("%d requests with tokens of a known key failed while the issuer hung (first: %v)", r.Errors(), firstError(r))
	}
}

// Invalid documents written mid-run change nothing: requests keep their outcome, and both the
// control plane and the authorization service report the problem, naming the file.
func (s *suite) invalidDocuments(t *testing.T) {
	d := loadTime(6 * time.Second)
	r := s.load(t, d, func(i int) (string, string) {
		return []string{"/api/items", "/admin/x"}[i%2], ""
	}, func() {
		time.Sleep(d / 4)
		s.c.Write("policies.yaml", strings.Replace(policiesDoc(true), "to: {methods", "too: {methods", 1))
		s.c.Write("services.yaml", strings.Replace(meshtest.ServicesDoc("demo", s.frontendPort, s.backendPort), "port: "+strconv.Itoa(s.backendPort), "port: 70000", 1))
		for _, admin := range []string{s.c.CPAdmin, s.authzAdmin} {
			proctest.Eventually(t, 10*time.Second, func() error {
				_, body, err := meshtest.Get("http://" + admin + "/debug/mesh")
				if err != nil || !strings.Contains(body, "policies.yaml") || !strings.Contains(body, "services.yaml") {
					return fmt.Errorf("problems not reported (%v): %.300s", err, body)
				}
				return nil
			}, "the invalid documents on "+admin+"/debug/mesh")
		}
		time.Sleep(time.Second) // what a reload would have taken
		s.c.Write("policies.yaml", policiesDoc(true))
		s.c.Write("services.yaml", meshtest.ServicesDoc("demo", s.frontendPort, s.backendPort))
	})
	wrong, first := 0, ""
	for j := range r.Samples {
		smp, out, path := r.sample(j)
		if want := map[string]int{"/api/items": 200, "/admin/x": 403}[path]; out.status != want {
			if wrong++; first == "" {
				first = fmt.Sprintf("%s at %s: %d %v %q", path, smp.Sent.Format("15:04:05.000"), out.status, smp.Err, out.detail)
			}
		}
	}
	s.report("invalid documents", r, fmt.Sprintf("0 failed, every request as before (/api 200, /admin 403; %d otherwise); both processes reported both files", wrong))
	if wrong > 0 {
		t.Errorf("%d requests changed outcome while invalid documents were on disk (first: %s)", wrong, first)
	}
}

// Kill one backend instance: SIGKILL its agent and Envoy, stop its application. The requests
// already in flight to it may
// fail; everything else is retried on the other instance (the outbound route retries what no
// application saw), and its endpoint leaves the frontend's EDS once the disconnect grace ends.
func (s *suite) backendKilled(t *testing.T) {
	var killed, dead time.Time
	var gone time.Duration
	d := loadTime(10 * time.Second)
	r := s.load(t, d, api, func() {
		time.Sleep(d / 5)
		killed = time.Now()
		s.backends[1].P.Kill()
		s.backendApps[1].Close()
		dead = time.Now()
		gone = proctest.Eventually(t, 20*time.Second, func() error { return s.endpoints(1) }, "the killed instance out of EDS")
	})
	// In flight while it died: sent before the kill returned, answered after it was sent.
	inFlight := 0
	for _, smp := range r.Samples {
		if smp.Sent.Before(dead) && smp.Done.After(killed) {
			inFlight++
		}
	}
	s.report("backend instance killed", r, fmt.Sprintf("failed ≤ the %d in flight while it died; endpoint left EDS after %s", inFlight, gone.Round(time.Millisecond)))
	if r.Errors() > inFlight {
		s.logFailures(t, r, killed)
		t.Errorf("%d requests failed when an instance was killed; the bound is the %d in flight to it (first: %v)", r.Errors(), inFlight, firstError(r))
	}
}

// decisionVersions reads the decision log: decision id → the mesh version that decided it.
func (s *suite) decisionVersions(t *testing.T) map[string]string {
	t.Helper()
	time.Sleep(500 * time.Millisecond) // the log is flushed every 200ms
	f, err := os.Open(s.decisions)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			ID      string `json:"decision_id"`
			Version string `json:"mesh_version"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("decision log line %q: %v", sc.Text(), err)
		}
		out[rec.ID] = rec.Version
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// firstError describes the first failed request: its error, when it was sent, and what the
// response said.
func firstError(r *run) string {
	for j := range r.Samples {
		if smp, out, path := r.sample(j); smp.Err != nil {
			return fmt.Sprintf("%s at %s: %v %q", path, smp.Sent.Format("15:04:05.000"), smp.Err, out.detail)
		}
	}
	return "none"
}

func keys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// containsPortOf reports whether a proxy configuration names an instance's inbound address.
func containsPortOf(cfg string, a *meshtest.Agent) bool {
	return strings.Contains(cfg, strconv.Itoa(a.Inbound))
}

// logFailures logs when each failed request was sent (relative to at) and what it got, with
// the frontend Envoy's counters of the backend cluster: who refused, retried or ejected.
func (s *suite) logFailures(t *testing.T, r *run, at time.Time) {
	var fails []string
	for j := range r.Samples {
		if smp, out, path := r.sample(j); smp.Err != nil && len(fails) < 30 {
			fails = append(fails, fmt.Sprintf("%s %+dms %v %.80s", path, smp.Sent.Sub(at).Milliseconds(), smp.Err, out.detail))
		}
	}
	t.Logf("failed requests, sent relative to %s:\n%s", at.Format("15:04:05.000"), strings.Join(fails, "\n"))
	if _, body, err := meshtest.Get("http://" + s.frontendEnvoy + "/stats?filter=outbound"); err == nil {
		t.Logf("frontend Envoy's outbound counters:\n%s", grepNonZero(body))
	}
}

func grepNonZero(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasSuffix(l, ": 0") && !strings.Contains(l, "No recorded") && !strings.Contains(l, "P0(") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
