package datapath

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/procstat"
)

// Run lengths: each configuration's maximum and its fixed-rate run take about 14 s; one round
// of every configuration about 90 s.
const (
	peakCallers  = 16
	peakWarmup   = 1 * time.Second
	peakDuration = 3 * time.Second
	fixedWarmup  = 1 * time.Second
	fixedRun     = 8 * time.Second
	// minHeld is the share of the asked rate a fixed run must achieve to count.
	minHeld = 0.97
	// rounds is how many times one iteration measures every configuration, in rotated order, so
	// a change in the machine's load falls on all of them.
	rounds = 2
)

// BenchmarkDataPath measures what the mesh adds to a request, side by side with two bare Envoys;
// see the package documentation. One iteration is one complete measurement (about 3 minutes);
// run it with -benchtime 1x.
func BenchmarkDataPath(b *testing.B) { reportMean(b, measure) }

// reportMean runs one complete measurement per iteration and reports each metric's mean.
func reportMean(b *testing.B, measure func(*testing.B) []metric) {
	sum := map[string]float64{}
	var units []string
	for range b.N {
		for _, mt := range measure(b) {
			if _, ok := sum[mt.unit]; !ok {
				units = append(units, mt.unit)
			}
			sum[mt.unit] += mt.value
		}
	}
	for _, u := range units {
		b.ReportMetric(sum[u]/float64(b.N), u)
	}
	b.ReportMetric(0, "ns/op") // the time of a whole iteration means nothing here
}

// measureRounds measures every configuration in each round, in an order rotated from round to
// round so a change in the machine's load falls on all of them: its set-up, its closed-loop
// maximum, then its latency, CPU and RSS at 1,000 rps. It returns each configuration's medians
// and the CPU the machine spent outside procs meanwhile (% of a core).
func measureRounds(ctx context.Context, b *testing.B, configs []*config, rounds int, procs []proc) (map[string]result, float64) {
	start, err := otherLoadStart(procs)
	if err != nil {
		b.Fatal(err)
	}
	for round := range rounds {
		for i := range configs {
			c := configs[(i+round)%len(configs)]
			if c.setup != nil {
				c.setup(b)
			}
			c.max = append(c.max, peak(ctx, b, c))
			at1k, cpu, rss := fixedMeasured(ctx, b, c, c.procs)
			c.at1k, c.cpu, c.rss = append(c.at1k, at1k), append(c.cpu, cpu), append(c.rss, rss)
		}
	}
	other, err := start.percentUntilNow()
	if err != nil {
		b.Fatal(err)
	}
	results := map[string]result{}
	for _, c := range configs {
		results[c.name] = c.result()
	}
	return results, other
}

// metric is one reported figure.
type metric struct {
	unit  string
	value float64
}

// percentiles are the latencies reported, from when each request was due.
type percentiles [3]time.Duration

var percentileNames = [3]string{"p50", "p90", "p99"}

func percentilesOf(l loadgen.Latencies) percentiles {
	return percentiles{l.Percentile(50), l.Percentile(90), l.Percentile(99)}
}

// config is one way a request reaches the application, and what was measured of it in each
// round.
type config struct {
	name  string
	about string
	do    loadgen.Do
	// setup puts the configuration in place before it is measured (nil: nothing to change).
	setup func(b *testing.B)
	procs []proc        // the processes whose CPU and RSS are reported
	run   time.Duration // the length of the fixed-rate run; fixedRun when zero

	max  []float64
	at1k []percentiles // at 1,000 rps
	cpu  [][]float64   // per round, per process: % of a core per 1,000 rps, during the 1,000 rps run
	rss  [][]float64   // per round, per process: MiB at the end of the 1,000 rps run
}

// result is a configuration's medians over the rounds.
type result struct {
	max      float64
	at1k     percentiles
	cpu, rss []float64
}

func (c *config) result() result {
	r := result{max: median(c.max)}
	for i := range r.at1k {
		r.at1k[i] = medianAt(c.at1k, i)
	}
	column := func(rows [][]float64, i int) []float64 {
		var col []float64
		for _, row := range rows {
			col = append(col, row[i])
		}
		return col
	}
	for i := range c.procs {
		r.cpu = append(r.cpu, median(column(c.cpu, i)))
		r.rss = append(r.rss, median(column(c.rss, i)))
	}
	return r
}

// median of v: the middle value, or the mean of the two middle ones.
func median[T ~int64 | ~float64](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianAt is the median of the runs' i-th percentile.
func medianAt(runs []percentiles, i int) time.Duration {
	v := make([]time.Duration, len(runs))
	for j, r := range runs {
		v[j] = r[i]
	}
	return median(v)
}

func measure(b *testing.B) []metric {
	ctx := b.Context()
	m := startMesh(b)
	defer m.close()
	pair := startBare(b, m.appPort, func(f func()) { m.stoppers = append(m.stoppers, f) })
	client := loadgen.NewClient(2 * peakCallers)
	// Every request carries the token, whichever path it takes, so the paths differ only in
	// what they do with it.
	header := http.Header{"Authorization": {"Bearer " + m.token}}
	meshDo := loadgen.HTTP{Client: client, URL: m.meshURL, Header: header}.Do
	// Each configuration's wants tell it from every other: a request the previous one answered
	// alike would let a measurement start before the change reached the proxies.
	denied := []want{{"", http.StatusUnauthorized, ""}, {m.silver, http.StatusForbidden, ""}}
	configs := []*config{
		{name: "direct", about: "the load generator → the application", do: loadgen.HTTP{Client: client, URL: m.appURL, Header: header}.Do},
		{name: "bare", about: "two bare Envoys, mTLS (testdata/bare-*.yaml)", do: loadgen.HTTP{Client: client, URL: pair.url, Header: header}.Do, procs: pair.procs},
		{name: "mesh", about: "the mesh, authorization OFF", do: meshDo, procs: m.procs,
			setup: func(b *testing.B) { m.apply(b, "OFF", "extAuthz", m.policies(), want{"", http.StatusOK, "/outside"}) }},
		{name: "native", about: fmt.Sprintf("JWT + %d-rule ABAC decided in Envoy (jwt_authn and RBAC), engine auto", abacRules), do: meshDo, procs: m.procs,
			setup: func(b *testing.B) {
				m.applyEnforced(b, "auto", m.policies(), true)
				m.apply(b, "ENFORCE", "auto", m.policies(), append([]want{{m.token, http.StatusOK, ""}}, denied...)...)
			}},
		{name: "native-abac", about: fmt.Sprintf("the %d rules without the token (principal, method, path) in Envoy's RBAC", abacRules), do: meshDo, procs: m.procs,
			setup: func(b *testing.B) { m.applyEnforced(b, "auto", m.abacOnly(), true) }},
		{name: "extauthz", about: fmt.Sprintf("JWT + %d-rule ABAC forced through ext_authz (engine extAuthz)", abacRules), do: meshDo, procs: m.procs,
			setup: func(b *testing.B) {
				m.applyEnforced(b, "extAuthz", m.policies(), false)
				m.apply(b, "ENFORCE", "extAuthz", m.policies(), append([]want{{m.token, http.StatusOK, ""}}, denied...)...)
			}},
		{name: "rego", about: "the JWT + ABAC decision in Rego, ext_authz", do: meshDo, procs: m.procs,
			setup: func(b *testing.B) {
				// Without a token the Rego policy denies (403) where the JWT rule asks for one (401).
				m.apply(b, "ENFORCE", "extAuthz", m.policyDocs(regoPolicy), want{m.token, http.StatusOK, ""}, want{"", http.StatusForbidden, ""})
			}},
	}

	results, other := measureRounds(ctx, b, configs, rounds, append(slices.Clone(m.procs), pair.procs...))
	b.Log(table(configs, results, other))

	direct, bare := results["direct"], results["bare"]
	ms := []metric{{"direct-max-rps", direct.max}, {"other-cpu%", other}}
	for _, c := range configs[1:] {
		r := results[c.name]
		ms = append(ms, metric{c.name + "-max-rps", r.max})
		for i, p := range percentileNames {
			ms = append(ms, metric{c.name + "-added-" + p + "-ms", ms1(r.at1k[i] - direct.at1k[i])})
		}
		for i, p := range c.procs {
			ms = append(ms, metric{c.name + "-" + p.name + "-cpu%/krps", r.cpu[i]})
			if c.name != "bare" {
				ms = append(ms, metric{c.name + "-" + p.name + "-rss-MiB", r.rss[i]})
			}
		}
		if c.name != "bare" {
			rt := ratios(r, bare, direct)
			ms = append(ms, metric{c.name + "-maxrps-x-bare", rt.max}, metric{c.name + "-backend-envoy-cpu-x-bare", rt.backendCPU})
			if !math.IsNaN(rt.p99) {
				ms = append(ms, metric{c.name + "-p99-x-bare", rt.p99})
			}
		}
	}
	return ms
}

// ratio is a configuration's figures over the bare pair's, measured in the same run.
type ratio struct{ p99, max, backendCPU float64 }

// ratios: added p99 over the bare pair's added p99, maximum rate over the bare pair's, and the
// backend Envoy's CPU per 1,000 rps over the bare backend Envoy's (the processes are listed
// frontend Envoy, backend Envoy first in both). When the bare pair adds no measurable p99 (on a
// busy machine the direct path's own tail can exceed it), the p99 ratio is NaN: not reported.
func ratios(r, bare, direct result) ratio {
	rt := ratio{p99: math.NaN(), max: r.max / bare.max, backendCPU: r.cpu[1] / bare.cpu[1]}
	if base := ms1(bare.at1k[2] - direct.at1k[2]); base >= minAddedP99 {
		rt.p99 = ms1(r.at1k[2]-direct.at1k[2]) / base
	}
	return rt
}

// minAddedP99 is the smallest added p99 of the bare pair, in ms, a ratio is taken over.
const minAddedP99 = 0.05

func ms1(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// failures counts the failed requests of a run, warmup included (the runs' own counts leave the
// warmup out), and keeps the first error.
type failures struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *failures) wrap(do loadgen.Do) loadgen.Do {
	return func(ctx context.Context, i int) error {
		err := do(ctx, i)
		if err != nil {
			f.mu.Lock()
			if f.n++; f.first == nil {
				f.first = err
			}
			f.mu.Unlock()
		}
		return err
	}
}

// peak returns the closed-loop maximum rate of c; any failed request fails the benchmark.
func peak(ctx context.Context, b *testing.B, c *config) float64 {
	b.Helper()
	var f failures
	r, err := loadgen.Peak{Callers: peakCallers, Warmup: peakWarmup, Duration: peakDuration}.Run(ctx, f.wrap(c.do))
	if err != nil {
		b.Fatalf("%s peak: %v", c.name, err)
	}
	if f.n > 0 {
		b.Fatalf("%s peak: %d requests failed, the first: %v", c.name, f.n, f.first)
	}
	return r.Rate
}

// fixed runs c at rate and returns its latency percentiles. A run with a failed request, or one
// that could not hold the rate, fails the benchmark: its figures would mean nothing.
func fixed(ctx context.Context, b *testing.B, c *config, rate float64) percentiles {
	b.Helper()
	var f failures
	r, err := loadgen.Fixed{Rate: rate, Warmup: fixedWarmup, Duration: cmp.Or(c.run, fixedRun)}.Run(ctx, f.wrap(c.do))
	if err != nil {
		b.Fatalf("%s at %.0f rps: %v", c.name, rate, err)
	}
	if f.n > 0 {
		b.Fatalf("%s at %.0f rps: %d requests failed, the first: %v", c.name, rate, f.n, f.first)
	}
	if got := r.Achieved(); got < minHeld*rate {
		b.Fatalf("%s at %.0f rps: achieved only %.0f rps", c.name, rate, got)
	}
	return percentilesOf(r.Latencies())
}

// fixedMeasured runs c at 1,000 rps and also returns the CPU of every process during the run
// (warmup included: the rate is the same) and the RSS at its end.
func fixedMeasured(ctx context.Context, b *testing.B, c *config, procs []proc) (percentiles, []float64, []float64) {
	b.Helper()
	const rate = 1000
	before, err := sampleCPU(procs)
	if err != nil {
		b.Fatal(err)
	}
	p := fixed(ctx, b, c, rate)
	after, err := sampleCPU(procs)
	if err != nil {
		b.Fatal(err)
	}
	rss := make([]float64, len(procs))
	for i, pr := range procs {
		if rss[i], err = procstat.RSSMiB(pr.pid); err != nil {
			b.Fatalf("%s: %v", pr.name, err)
		}
	}
	return p, before.percentPerKRPS(after, rate), rss
}

// table is a human summary of one iteration: every configuration's medians, then the ratios to
// the bare pair the targets are written in.
func table(configs []*config, results map[string]result, other float64) string {
	var s strings.Builder
	direct, bare := results["direct"], results["bare"]
	fmt.Fprintf(&s, "medians of %d rounds; latency from due at 1,000 rps, added over direct; other CPU load on the machine: %.0f %% of a core\n", rounds, other)
	s.WriteString("config     max rps | added p50    p90    p99 ms | ×bare: p99  max rps  backend Envoy CPU | CPU %/krps: front Envoy, back Envoy, authz | about\n")
	for _, c := range configs {
		r := results[c.name]
		fmt.Fprintf(&s, "%-9s %8.0f |", c.name, r.max)
		for i := range r.at1k {
			fmt.Fprintf(&s, " %6.3f", ms1(r.at1k[i]-direct.at1k[i]))
		}
		if c.name == "direct" || c.name == "bare" {
			s.WriteString(" |      -        -                  -")
		} else {
			rt := ratios(r, bare, direct)
			fmt.Fprintf(&s, " | %9.2f %8.2f %18.2f", rt.p99, rt.max, rt.backendCPU) // NaN prints NaN
		}
		s.WriteString(" |")
		for i, p := range c.procs {
			if i < 2 || p.name == "authz" {
				fmt.Fprintf(&s, " %5.1f", r.cpu[i])
			}
		}
		fmt.Fprintf(&s, " | %s\n", c.about)
	}
	return s.String()
}
