package datapath

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/meshtest"
)

// features are the switches of testdata/features-backend.yaml: each is one of the mesh's inbound
// features (issue 16), in the shape the translator gives the benchmark's backend with
// authorization OFF. The zero value is the bare backend.
type features struct {
	CORS              bool // the cors filter (no policy on the route)
	LocalRateLimit    bool // the local_ratelimit filter and the route's RateLimitPolicy (a huge bucket)
	RouteLimit        bool // the route's local_ratelimit config alone, the filter kept
	JWTAuthn          bool // jwt_authn without providers (ECDS in the mesh, inline here)
	RBAC              bool // the two RBAC filters, without rules at the listener
	ExtAuthz          bool // ext_authz, disabled on the route (authorization OFF)
	VerifiedLimit     bool // the verified-attributes local_ratelimit filter
	GlobalLimits      bool // the two global ratelimit filters (no rate_limits on the route)
	AccessLog         bool // the gRPC access log behind its metadata or_filter
	RemoteAddress     bool // use_remote_address and skip_xff_append
	XFCC              bool // forward_client_cert_details SANITIZE_SET with the URI
	PathNormalization bool // normalize_path, merge_slashes, escaped-slash action
	Underscores       bool // headers_with_underscores_action REJECT_REQUEST
	LocalReply        bool // local_reply_config's CEL mapper
	RouteExtras       bool // the route's timeout and decorator
	OverloadManager   bool // the bootstrap's downstream connections monitor
	AuthzPort         int  // the access log service, where ext_authz and the global limits point too
}

// featureSwitches are the all-but-one variants: every switch of features, then two groups (all
// the filters but the router; all the HTTP connection manager's settings).
var featureSwitches = []struct {
	name string
	off  func(*features)
}{
	{"cors", func(f *features) { f.CORS = false }},
	{"local-ratelimit", func(f *features) { f.LocalRateLimit, f.RouteLimit = false, false }},
	{"route-limit", func(f *features) { f.RouteLimit = false }},
	{"jwt-authn", func(f *features) { f.JWTAuthn = false }},
	{"rbac", func(f *features) { f.RBAC = false }},
	{"ext-authz", func(f *features) { f.ExtAuthz = false }},
	{"verified-limit", func(f *features) { f.VerifiedLimit = false }},
	{"global-limits", func(f *features) { f.GlobalLimits = false }},
	{"access-log", func(f *features) { f.AccessLog = false }},
	{"remote-address", func(f *features) { f.RemoteAddress = false }},
	{"xfcc", func(f *features) { f.XFCC = false }},
	{"path-normalize", func(f *features) { f.PathNormalization = false }},
	{"underscores", func(f *features) { f.Underscores = false }},
	{"local-reply", func(f *features) { f.LocalReply = false }},
	{"route-extras", func(f *features) { f.RouteExtras = false }},
	{"overload-mgr", func(f *features) { f.OverloadManager = false }},
	// Two groups: the per-feature differences are near the noise, the groups' are not.
	{"all-filters", func(f *features) {
		f.CORS, f.LocalRateLimit, f.RouteLimit, f.JWTAuthn, f.RBAC, f.ExtAuthz, f.VerifiedLimit, f.GlobalLimits =
			false, false, false, false, false, false, false, false
	}},
	{"all-hcm", func(f *features) {
		f.AccessLog, f.RemoteAddress, f.XFCC, f.PathNormalization, f.Underscores, f.LocalReply =
			false, false, false, false, false, false
	}},
}

// allFeatures is the mesh's backend Envoy with authorization OFF, as BenchmarkDataPath runs it.
func allFeatures(authzPort int) features {
	return features{CORS: true, LocalRateLimit: true, RouteLimit: true, JWTAuthn: true, RBAC: true,
		ExtAuthz: true, VerifiedLimit: true, GlobalLimits: true, AccessLog: true, RemoteAddress: true,
		XFCC: true, PathNormalization: true, Underscores: true, LocalReply: true, RouteExtras: true,
		OverloadManager: true, AuthzPort: authzPort}
}

// Run lengths of BenchmarkInboundFeatures: a variant's maximum and its fixed-rate run take about
// 9 s, a round of the 20 variants 3 minutes, so the benchmark stays under 10 minutes.
const (
	featureRounds = 3
	featureRun    = 4 * time.Second
)

// BenchmarkInboundFeatures finds what each of the mesh's inbound features costs in the backend
// Envoy (issue 16): beside the bare pair, the bare frontend Envoy in front of a backend Envoy with
// every feature of the mesh's inbound listener (testdata/features-backend.yaml, its shapes taken
// from the mesh's backend Envoy with authorization OFF), and one such pair for each feature with
// that feature alone turned off. Each round measures every variant, in an order rotated from
// round to round: its closed-loop maximum rate, then the backend Envoy's CPU per 1,000 rps at
// 1,000 rps. The log has the medians and each variant's difference from all-on: what removing
// that feature saves. Run it with -benchtime 1x.
func BenchmarkInboundFeatures(b *testing.B) {
	envoytest.Require(b)
	reportMean(b, measureFeatures)
}

func measureFeatures(b *testing.B) []metric {
	ctx := b.Context()
	appServer := httptest.NewServer(app)
	defer appServer.Close()
	appPort := appServer.Listener.Addr().(*net.TCPAddr).Port
	var stoppers []func()
	defer func() {
		for _, f := range slices.Backward(stoppers) {
			f()
		}
	}()
	stop := func(f func()) { stoppers = append(stoppers, f) }
	client := loadgen.NewClient(2 * peakCallers)

	sink := startLogSink(b)
	all := allFeatures(sink.port)
	variant := func(name, about string, f features, template string) *config {
		p := startPair(b, appPort, stop, template, f)
		checkFeatures(b, name, p.url, f)
		return &config{name: name, about: about, do: loadgen.HTTP{Client: client, URL: p.url}.Do,
			procs: p.procs, run: featureRun}
	}
	configs := []*config{
		variant("bare", "the bare pair (testdata/bare-*.yaml)", features{}, "bare-backend.yaml"),
		variant("all", "every inbound feature of the mesh, authorization OFF", all, "features-backend.yaml"),
	}
	for _, s := range featureSwitches {
		f := all
		s.off(&f)
		configs = append(configs, variant("-"+s.name, "all but "+s.name, f, "features-backend.yaml"))
	}

	var procs []proc
	for _, c := range configs {
		procs = append(procs, c.procs...)
	}
	results, other := measureRounds(ctx, b, configs, featureRounds, procs)
	b.Log(featureTable(configs, results, other) + fmt.Sprintf("access log entries received: %d\n", sink.entries.Load()))

	ms := []metric{{"other-cpu%", other}}
	for _, c := range configs {
		r := results[c.name]
		ms = append(ms, metric{c.name + "-max-rps", r.max}, metric{c.name + "-backend-envoy-cpu%/krps", r.cpu[1]})
	}
	return ms
}

// logSink is an access log service that counts the entries it receives and drops them.
type logSink struct {
	alsv3.UnimplementedAccessLogServiceServer
	entries atomic.Int64
	port    int
}

// startLogSink serves a logSink on loopback until the test ends: the decision log's entries go
// where the mesh sends them, to a gRPC access log service.
func startLogSink(tb testing.TB) *logSink {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	sink := &logSink{port: ln.Addr().(*net.TCPAddr).Port}
	alsv3.RegisterAccessLogServiceServer(srv, sink)
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(srv.Stop)
	return sink
}

// TestInboundFeaturesConfig runs BenchmarkInboundFeatures' all-on backend (so its configuration
// stays one Envoy takes) and checks that with authorization OFF no request reaches the decision
// log, whose filter matches only what RBAC or jwt_authn decided: a log entry per request was
// 3 points of a core per 1,000 rps.
func TestInboundFeaturesConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Envoy")
	}
	envoytest.Require(t)
	app := httptest.NewServer(app)
	t.Cleanup(app.Close)
	sink := startLogSink(t)
	f := allFeatures(sink.port)
	p := startPair(t, app.Listener.Addr().(*net.TCPAddr).Port, t.Cleanup, "features-backend.yaml", f)
	checkFeatures(t, "all", p.url, f)
	const requests = 20
	for range requests {
		code, body, err := meshtest.Do(http.MethodGet, p.url, nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %q %v", p.url, code, body, err)
		}
	}
	// The log flushes each second (the mesh's buffer_flush_interval is Envoy's default).
	time.Sleep(1500 * time.Millisecond)
	if n := sink.entries.Load(); n != 0 {
		t.Errorf("%d decision log entries for %d requests nothing decided", n, requests)
	}
}

func (l *logSink) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	for {
		msg, err := stream.Recv()
		if err != nil {
			return nil // the Envoy went away
		}
		l.entries.Add(int64(len(msg.GetHttpLogs().GetLogEntry())))
	}
}

// checkFeatures makes sure a variant's backend has what its switches say, where a request can
// tell: a header with an underscore is refused only with Underscores (the backend resets the
// HTTP/2 stream, the frontend answers 503), and the route's rate limit
// answers with its x-ratelimit-limit header (DRAFT_VERSION_03) only with LocalRateLimit and
// RouteLimit.
func checkFeatures(b testing.TB, name, target string, f features) {
	b.Helper()
	get := func(u string, h http.Header) *http.Response {
		req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, u, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatalf("%s: GET %s: %v", name, u, err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get(target, http.Header{"X_Under": {"1"}}); (resp.StatusCode != http.StatusOK) != f.Underscores {
		b.Fatalf("%s: a header with an underscore: %d, Underscores %t", name, resp.StatusCode, f.Underscores)
	}
	resp := get(target, http.Header{})
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: GET %s: %d", name, target, resp.StatusCode)
	}
	if got := resp.Header.Get("X-Ratelimit-Limit") != ""; got != (f.LocalRateLimit && f.RouteLimit) {
		b.Fatalf("%s: the route's rate limit header present %t, want %t", name, got, f.LocalRateLimit && f.RouteLimit)
	}
}

// featureTable is the log's summary: each variant's medians and their difference from all-on
// (positive: the variant costs more CPU, or reaches a higher rate, than all-on).
func featureTable(configs []*config, results map[string]result, other float64) string {
	var s strings.Builder
	all, bare := results["all"], results["bare"]
	fmt.Fprintf(&s, "medians of %d rounds; backend Envoy CPU at 1,000 rps; other CPU load on the machine: %.0f %% of a core\n", featureRounds, other)
	fmt.Fprintf(&s, "%-17s %8s %8s | %10s %8s | %s\n", "variant", "max rps", "×bare", "CPU %/krps", "Δ all", "about")
	for _, c := range configs {
		r := results[c.name]
		fmt.Fprintf(&s, "%-17s %8.0f %8.2f | %10.1f %+8.1f | %s\n", c.name, r.max, r.max/bare.max, r.cpu[1], r.cpu[1]-all.cpu[1], c.about)
	}
	return s.String()
}
