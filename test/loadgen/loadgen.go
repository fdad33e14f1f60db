package loadgen

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Do sends request i and reports whether it succeeded. It must honour ctx.
type Do func(ctx context.Context, i int) error

// Sample is one request of a fixed-rate run.
type Sample struct {
	Due, Sent, Done time.Time
	Err             error
}

// Latency is from when the request was due: what its caller would have waited.
func (s Sample) Latency() time.Duration { return s.Done.Sub(s.Due) }

// Wire is from when the request was sent; Latency minus Wire is the generator's own delay.
func (s Sample) Wire() time.Duration { return s.Done.Sub(s.Sent) }

// Fixed is a fixed-rate run.
type Fixed struct {
	Rate     float64       // requests per second
	Warmup   time.Duration // sent but not measured
	Duration time.Duration // measured
	// Pacers bounds the requests in flight (default 128). Pacer k sends requests k, k+P, ...,
	// each sleeping until its next request is due and sending it itself, so no hand-off adds to
	// a request's latency; a pacer still busy with its previous request sends late, and the
	// latency says so.
	Pacers  int
	Timeout time.Duration // per request (default 5s)
}

// ErrStopped is returned when ctx ends before a run completes.
var ErrStopped = errors.New("loadgen: stopped")

// Run sends the requests of f through do and returns the measured samples (warmup left out) in
// the order they were due.
func (f Fixed) Run(ctx context.Context, do Do) (Result, error) {
	pacers := cmp.Or(f.Pacers, 128)
	timeout := cmp.Or(f.Timeout, 5*time.Second)
	total := int(f.Rate * (f.Warmup + f.Duration).Seconds())
	skip := int(f.Rate * f.Warmup.Seconds())
	interval := time.Duration(float64(time.Second) / f.Rate)
	samples := make([]Sample, total)
	start := time.Now().Add(10 * time.Millisecond)
	var wg sync.WaitGroup
	for k := range min(pacers, total) {
		wg.Go(func() {
			for i := k; i < total; i += pacers {
				due := start.Add(time.Duration(i) * interval)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				if ctx.Err() != nil {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, timeout)
				sent := time.Now()
				err := do(rctx, i)
				cancel()
				samples[i] = Sample{Due: due, Sent: sent, Done: time.Now(), Err: err}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return Result{}, ErrStopped
	}
	return Result{Samples: samples[skip:], Elapsed: time.Since(start.Add(f.Warmup)), first: skip}, nil
}

// Result is what a fixed-rate run measured.
type Result struct {
	Samples []Sample
	Elapsed time.Duration
	first   int // index (as passed to Do) of Samples[0]
}

// Index returns the Do index of Samples[j].
func (r Result) Index(j int) int { return r.first + j }

// Errors counts the failed requests.
func (r Result) Errors() int {
	n := 0
	for _, s := range r.Samples {
		if s.Err != nil {
			n++
		}
	}
	return n
}

// Achieved is the rate the requests completed at.
func (r Result) Achieved() float64 { return float64(len(r.Samples)) / r.Elapsed.Seconds() }

// Latencies returns the sorted latencies (from when each request was due).
func (r Result) Latencies() Latencies { return r.sorted(Sample.Latency) }

// WireLatencies returns the sorted latencies from when each request was sent.
func (r Result) WireLatencies() Latencies { return r.sorted(Sample.Wire) }

func (r Result) sorted(of func(Sample) time.Duration) Latencies {
	l := make([]time.Duration, len(r.Samples))
	for i, s := range r.Samples {
		l[i] = of(s)
	}
	slices.Sort(l)
	return l
}

// Latencies are sorted durations.
type Latencies []time.Duration

// Percentile returns the p-th percentile (nearest rank), 0 when empty.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(float64(len(l))*p/100+0.5) - 1
	return l[min(max(i, 0), len(l)-1)]
}

// Peak is a closed-loop run: Callers each send the next request as soon as the last one is
// answered, for Duration after Warmup.
type Peak struct {
	Callers          int
	Warmup, Duration time.Duration
	Timeout          time.Duration // per request (default 5s)
}

// PeakResult is what a closed-loop run measured.
type PeakResult struct {
	Rate      float64 // completed requests per second
	Latencies Latencies
	Errors    int64
}

// Run sends requests through do until the run ends.
func (p Peak) Run(ctx context.Context, do Do) (PeakResult, error) {
	timeout := cmp.Or(p.Timeout, 5*time.Second)
	var errs atomic.Int64
	var next atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	measureFrom := time.Now().Add(p.Warmup)
	end := measureFrom.Add(p.Duration)
	var wg sync.WaitGroup
	for range p.Callers {
		wg.Go(func() {
			var mine []time.Duration
			var myErrs int64
			for {
				t0 := time.Now()
				if t0.After(end) || ctx.Err() != nil {
					break
				}
				rctx, cancel := context.WithTimeout(ctx, timeout)
				err := do(rctx, int(next.Add(1)-1))
				cancel()
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					myErrs++
				}
				mine = append(mine, time.Since(t0))
			}
			errs.Add(myErrs)
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return PeakResult{}, ErrStopped
	}
	slices.Sort(all)
	return PeakResult{Rate: float64(len(all)) / p.Duration.Seconds(), Latencies: all, Errors: errs.Load()}, nil
}
