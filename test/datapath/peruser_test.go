package datapath

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
)

// perUserLimit is a Local limit keyed on the verified sub (counted after authorization, from the
// decision's dynamic metadata), with a bucket far above the load, so it runs on every request and
// never refuses one.
const perUserLimit = `
    - name: per-user
      bucket: {maxTokens: 1000000, fillInterval: 1s}
      by: {jwtClaim: sub}
`

// perUserRounds is how many times each configuration runs, alternating, so that a change in the
// machine's load during the benchmark falls on both.
const perUserRounds = 3

// BenchmarkPerUserLimit is what a per-user limit adds to the data path (issue 17: under 5% of
// the p99 at 1,000 rps, against no such limit, in the same run). On the mesh of BenchmarkDataPath
// (authorization on), it alternates runs at 1,000 rps without and with a limit keyed on the
// verified sub, perUserRounds each, and reports the median p50 and p99 of each and the p99's
// relative increase. One iteration takes about a minute; run it with -benchtime 1x.
func BenchmarkPerUserLimit(b *testing.B) {
	var sums [4]float64
	var increase float64
	for range b.N {
		m := startMesh(b)
		client := loadgen.NewClient(2 * peakCallers)
		c := &config{name: "authz", do: loadgen.HTTP{Client: client, URL: m.meshURL, Header: http.Header{"Authorization": {"Bearer " + m.token}}}.Do}
		var without, with []percentiles
		for range perUserRounds {
			m.setPolicies(b, false)
			without = append(without, fixed(b.Context(), b, c, 1000))
			m.setPolicies(b, true)
			with = append(with, fixed(b.Context(), b, c, 1000))
		}
		m.close()
		w50, w99 := medianAt(without, 0), medianAt(without, 2)
		p50, p99 := medianAt(with, 0), medianAt(with, 2)
		b.Logf("p50 / p99 at 1,000 rps in ms, without → with the per-user limit: %.3f / %.3f → %.3f / %.3f", ms1(w50), ms1(w99), ms1(p50), ms1(p99))
		for i, d := range []time.Duration{w50, w99, p50, p99} {
			sums[i] += ms1(d)
		}
		increase += 100 * (ms1(p99) - ms1(w99)) / ms1(w99)
	}
	n := float64(b.N)
	for i, u := range []string{"without-p50-ms", "without-p99-ms", "peruser-p50-ms", "peruser-p99-ms"} {
		b.ReportMetric(sums[i]/n, u)
	}
	b.ReportMetric(increase/n, "peruser-p99-added-%")
	b.ReportMetric(0, "ns/op")
}

// setPolicies writes the policies, with or without the per-user limit, and waits until the
// backend's Envoy counts requests in the verified rate limit filter (its
// ratelimit_verified.http_local_rate_limit.ok counter) exactly when the limit is there, and both
// proxies have ACKed the change.
func (m *mesh) setPolicies(b *testing.B, perUser bool) {
	b.Helper()
	doc := m.policies()
	if perUser {
		doc += perUserLimit
	}
	m.c.Write("policies.yaml", doc)
	proctest.Eventually(b, 30*time.Second, func() error {
		before, err := m.verifiedLimitOK()
		if err != nil {
			return err
		}
		if err := m.expect(m.token, http.StatusOK); err != nil {
			return err
		}
		after, err := m.verifiedLimitOK()
		if err != nil {
			return err
		}
		if counted := after > before; counted != perUser {
			return fmt.Errorf("the per-user limit counted a request: %t, want %t", counted, perUser)
		}
		return m.c.Synced("backend-1."+namespace, "frontend-1."+namespace)
	}, "the policies in both proxies")
}

// verifiedLimitOK sums the backend Envoy's counters of requests the verified rate limit filter
// let through.
func (m *mesh) verifiedLimitOK() (uint64, error) {
	return m.backendCounter(`ratelimit_verified\.http_local_rate_limit\.ok$`)
}

// backendCounter sums the backend Envoy's counters whose names match the regular expression.
func (m *mesh) backendCounter(filter string) (uint64, error) {
	code, body, err := meshtest.Get("http://" + m.envoys[0] + "/stats?filter=" + url.QueryEscape(filter))
	if err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("backend Envoy stats: %d %v", code, err)
	}
	return envoytest.SumCounters(body)
}
