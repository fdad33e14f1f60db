package datapath

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/procstat"
)

// Run lengths: one iteration measures three maxima and seven fixed-rate runs in about 90 s.
const (
	peakCallers  = 16
	peakWarmup   = 1 * time.Second
	peakDuration = 3 * time.Second
	fixedWarmup  = 1 * time.Second
	fixedRun     = 8 * time.Second
	// minHeld is the share of the asked rate a fixed run must achieve to count.
	minHeld = 0.97
)

// BenchmarkDataPath measures what the mesh adds to a request; see the package documentation.
// One iteration is one complete measurement (about 90 s); run it with -benchtime 1x.
func BenchmarkDataPath(b *testing.B) {
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

// config is one way a request reaches the application, and what was measured of it.
type config struct {
	name       string
	do         loadgen.Do
	max        float64     // closed-loop maximum, rps
	at1k       percentiles // at 1,000 rps
	atHalf     percentiles // at half of max
	directHalf percentiles // the direct path at this config's half of max
	cpu        []float64   // per mesh process, % of a core per 1,000 rps, during the 1,000 rps run
	rss        []float64   // per mesh process, MiB, at the end of the 1,000 rps run
}

func measure(b *testing.B) []metric {
	ctx := b.Context()
	m := startMesh(b)
	defer m.close()
	client := loadgen.NewClient(2 * peakCallers)
	// Every request carries the token, whichever path it takes, so the paths differ only in
	// what they do with it.
	header := http.Header{"Authorization": {"Bearer " + m.token}}
	direct := &config{name: "direct", do: loadgen.HTTP{Client: client, URL: m.appURL, Header: header}.Do}
	noauthz := &config{name: "noauthz", do: loadgen.HTTP{Client: client, URL: m.meshURL, Header: header}.Do}
	authz := &config{name: "authz", do: noauthz.do}

	start, err := otherLoadStart(m.procs)
	if err != nil {
		b.Fatal(err)
	}
	direct.max = peak(ctx, b, direct)
	authz.max = peak(ctx, b, authz)
	authz.at1k, authz.cpu, authz.rss = fixedMeasured(ctx, b, authz, m.procs)
	authz.atHalf = fixed(ctx, b, authz, authz.max/2)

	m.authzOff(b)
	direct.at1k = fixed(ctx, b, direct, 1000)
	authz.directHalf = fixed(ctx, b, direct, authz.max/2)
	noauthz.max = peak(ctx, b, noauthz)
	noauthz.at1k, noauthz.cpu, noauthz.rss = fixedMeasured(ctx, b, noauthz, m.procs)
	noauthz.atHalf = fixed(ctx, b, noauthz, noauthz.max/2)
	noauthz.directHalf = fixed(ctx, b, direct, noauthz.max/2)
	other, err := start.percentUntilNow()
	if err != nil {
		b.Fatal(err)
	}
	b.Log(table(direct, noauthz, authz, m.procs, other))

	ms := []metric{{"direct-max-rps", direct.max}, {"other-cpu%", other}}
	for _, c := range []*config{noauthz, authz} {
		ms = append(ms, metric{c.name + "-max-rps", c.max})
		for i, p := range percentileNames {
			ms = append(ms, metric{c.name + "-added-" + p + "-ms", ms1(c.at1k[i] - direct.at1k[i])})
		}
		for i, p := range percentileNames {
			ms = append(ms, metric{c.name + "-halfmax-added-" + p + "-ms", ms1(c.atHalf[i] - c.directHalf[i])})
		}
	}
	for i, p := range m.procs {
		ms = append(ms, metric{p.name + "-cpu%/krps", authz.cpu[i]}, metric{p.name + "-rss-MiB", authz.rss[i]})
	}
	// Without ext_authz only the Envoys' share changes much; the table has every process.
	for i, p := range m.procs[:2] {
		ms = append(ms, metric{"noauthz-" + p.name + "-cpu%/krps", noauthz.cpu[i]})
	}
	return ms
}

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
	r, err := loadgen.Fixed{Rate: rate, Warmup: fixedWarmup, Duration: fixedRun}.Run(ctx, f.wrap(c.do))
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

// table is a compact human summary of one iteration, in the 9 lines a benchmark's log keeps.
func table(direct, noauthz, authz *config, procs []proc, other float64) string {
	var s strings.Builder
	cells := func(at, base percentiles, added bool) {
		for i := range at {
			fmt.Fprintf(&s, " %6.3f", ms1(at[i]))
			if added {
				fmt.Fprintf(&s, " (%+.3f)", ms1(at[i]-base[i]))
			}
		}
	}
	fmt.Fprintf(&s, "latency from due in ms (added over direct at the same rate); other CPU load on the machine: %.0f %% of a core\n", other)
	s.WriteString("path     max rps | p50 p90 p99 at 1,000 rps | half of the mesh max: rate, p50 p90 p99\n")
	for _, c := range []*config{noauthz, authz} {
		fmt.Fprintf(&s, "direct   %7.0f |", direct.max)
		cells(direct.at1k, direct.at1k, false)
		fmt.Fprintf(&s, " | %5.0f", c.max/2)
		cells(c.directHalf, c.directHalf, false)
		fmt.Fprintf(&s, "\n%-8s %7.0f |", c.name, c.max)
		cells(c.at1k, direct.at1k, true)
		fmt.Fprintf(&s, " | %5.0f", c.max/2)
		cells(c.atHalf, c.directHalf, true)
		s.WriteString("\n")
	}
	s.WriteString("cpu%/krps authz/noauthz:")
	for i, p := range procs {
		fmt.Fprintf(&s, " %s %.1f/%.1f", p.name, authz.cpu[i], noauthz.cpu[i])
	}
	s.WriteString("\nRSS MiB:")
	for i, p := range procs {
		fmt.Fprintf(&s, " %s %.1f", p.name, authz.rss[i])
	}
	return s.String()
}
