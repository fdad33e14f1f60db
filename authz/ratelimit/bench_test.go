package ratelimit

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/test/redistest"
	"github.com/portcullis/portcullis/test/testca"
)

// BenchmarkShouldRateLimit is what a Global limit adds to a request, without Envoy's own filter:
// a proxy's ShouldRateLimit over gRPC with SPIFFE mTLS on loopback (one connection, as Envoy
// keeps), the caller check, two descriptors (a service-wide limit and a per-user one, 100
// users), and the Redis round trip to a redis-server on loopback. It reports each call's p50
// and p99 and the Redis round trips per call (EVALSHA counted by Redis itself).
func BenchmarkShouldRateLimit(b *testing.B) {
	r := redistest.Start(b, "")
	ca := testca.New(b, "portcullis.local")
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	serverID := spiffeid.RequireFromString("spiffe://portcullis.local/ns/portcullis/sa/authz")
	callers := &server.Callers{TrustDomain: td, NotProxies: []spiffeid.ID{serverID}}
	f := newServiceWith(b, Options{Redis: Redis{Addr: r.Addr}, Authorize: callers.Authorize})
	conn := dialAs(b, serveMTLS(b, f, ca, serverID), ca, "spiffe://portcullis.local/ns/shop/sa/api", serverID)
	b.Cleanup(func() { _ = conn.Close() })
	client := rlsv3.NewRateLimitServiceClient(conn)
	reqs := make([]*rlsv3.RateLimitRequest, 100)
	for i := range reqs {
		reqs[i] = &rlsv3.RateLimitRequest{Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{
			descriptor("service", "1000000/1000000/1000"),
			descriptor("per-user", "100000/100000/60000", "caller", "jwt:\"https://idp.example\"user-"+strconv.Itoa(i)),
		}}
	}
	ctx := context.Background()
	call := func(i int) {
		resp, err := client.ShouldRateLimit(ctx, reqs[i%len(reqs)])
		if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			b.Fatalf("call %d: %v %v", i, resp.GetOverallCode(), err)
		}
	}
	for i := range 200 { // connections up, script loaded
		call(i)
	}
	before, err := r.Calls("evalsha")
	if err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		start := time.Now()
		call(i)
		times = append(times, time.Since(start))
		i++
	}
	b.StopTimer()
	after, err := r.Calls("evalsha")
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(after-before)/float64(len(times)), "redis-trips/call")
}
