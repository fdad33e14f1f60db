package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A stall in the server delays every request due while it lasts: measured from when they were
// due, their latencies show it, though each was answered quickly once sent.
func TestFixedRateCountsTheRequestsAStallDelayed(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		if n.Add(1) == 20 {
			time.Sleep(300 * time.Millisecond)
		}
	}))
	defer srv.Close()
	h := HTTP{Client: NewClient(1), URL: srv.URL}
	res, err := Fixed{Rate: 100, Duration: time.Second, Pacers: 1}.Run(context.Background(), h.Do)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 100 || res.Errors() != 0 {
		t.Fatalf("%d samples, %d errors; want 100 and 0", len(res.Samples), res.Errors())
	}
	// About 30 requests were due during the stall: the 90th percentile must include them.
	lat, wire := res.Latencies(), res.WireLatencies()
	if p := lat.Percentile(90); p < 50*time.Millisecond {
		t.Errorf("p90 from due %s: the stall's delayed requests are missing", p)
	}
	if p := wire.Percentile(90); p > 50*time.Millisecond {
		t.Errorf("p90 from sent %s: only the stalled request itself should be slow on the wire", p)
	}
	if lat[len(lat)-1] < 300*time.Millisecond {
		t.Errorf("max latency %s, want the 300ms stall", lat[len(lat)-1])
	}
}

func TestFixedRateReportsStatusErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	var seen atomic.Int64
	h := HTTP{Client: NewClient(4), URL: srv.URL, OnResponse: func(int, *http.Response) { seen.Add(1) }}
	res, err := Fixed{Rate: 200, Warmup: 100 * time.Millisecond, Duration: 200 * time.Millisecond}.Run(context.Background(), h.Do)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 40 || res.Errors() != 40 || seen.Load() != 60 {
		t.Fatalf("%d samples, %d errors, %d responses; want 40, 40 and 60 (warmup included)", len(res.Samples), res.Errors(), seen.Load())
	}
	if se, ok := res.Samples[0].Err.(*StatusError); !ok || se.Status != 503 {
		t.Errorf("error %v, want status 503", res.Samples[0].Err)
	}
	if res.Index(0) != 20 {
		t.Errorf("first measured index %d, want 20 (after 20 warmup requests)", res.Index(0))
	}
}

func TestPeakCountsCompletedRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		time.Sleep(10 * time.Millisecond)
	}))
	defer srv.Close()
	h := HTTP{Client: NewClient(4), URL: srv.URL}
	res, err := Peak{Callers: 4, Warmup: 50 * time.Millisecond, Duration: 500 * time.Millisecond}.Run(context.Background(), h.Do)
	if err != nil {
		t.Fatal(err)
	}
	// 4 callers at ≥10ms each: at most 400/s.
	if res.Rate > 400 || res.Rate < 100 || res.Errors != 0 {
		t.Errorf("rate %.0f/s with %d errors; want 100–400/s and none", res.Rate, res.Errors)
	}
}

func TestPercentile(t *testing.T) {
	l := Latencies{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]time.Duration{50: 5, 90: 9, 99: 10, 100: 10, 0: 1} {
		if got := l.Percentile(p); got != want {
			t.Errorf("p%v = %d, want %d", p, got, want)
		}
	}
	if (Latencies{}).Percentile(50) != 0 {
		t.Error("empty latencies")
	}
}
