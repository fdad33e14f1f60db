package translate

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/portcullis/portcullis/authz/jwt"
	authzserver "github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// Listener names of the differential harness: the translation under engine auto, and the same
// mesh under engine extAuthz (every request to the authorization service: the engine's answer).
const (
	diffNative   = "native"
	diffExtAuthz = "extauthz"
)

// Sizes of the differential test: policy sets and requests per set.
const (
	diffSets        = 200
	diffRequests    = 30
	diffSeedEnvName = "PORTCULLIS_DIFF_SEED"
)

// TestRBACDecidesAsTheEngine is the differential test of issue 16: generated policy sets, each
// translated twice and pushed over xDS to one real Envoy — once under engine auto (RBAC where
// expressible) and once under extAuthz, where the real authorization service (authz/server and
// its policy engine, in this process) decides every request from what Envoy sends it — and
// generated requests, attack shapes included, sent to both listeners over mTLS with client
// certificates for several SPIFFE IDs, or in plaintext (PERMISSIVE). Every status must be equal;
// a set the generator made inexpressible must have no request decided by RBAC, and an
// expressible set must have RBAC decide at least its plain requests.
func TestRBACDecidesAsTheEngine(t *testing.T) {
	envoytest.Require(t) // Start finds the same binary
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(diffSeedEnvName); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", diffSeedEnvName, err)
		}
	}
	t.Logf("seed %d (%s=%d go test -run %s reproduces it)", seed, diffSeedEnvName, seed, t.Name())
	h := newDiffHarness(t)
	for i, c := range diffRegressions() {
		h.check(t, fmt.Sprintf("regression %d", i), c.set, c.requests)
	}
	r := rand.New(rand.NewPCG(seed, seed>>1|1))
	for i := range diffSets {
		set := genPolicySet(r)
		reqs := make([]*genRequest, diffRequests)
		for j := range reqs {
			reqs[j] = genRequestFor(r, set)
		}
		h.check(t, fmt.Sprintf("set %d", i), set, reqs)
		if t.Failed() {
			break // one set's failure says enough; its seed reproduces it
		}
	}
	t.Logf("%d policy sets (%d expressible), %d requests on each listener: %d decided in Envoy (RBAC, or jwt_authn refusing the token), %d by ext_authz, %d refused before authorization",
		h.sets, h.nativeSets, h.requests, h.native, h.requests-h.native-h.early, h.early)
	h.checkDecisionLog(t)
}

// diffCase is a policy set and requests kept because they once found a difference.
type diffCase struct {
	set      *genSet
	requests []*genRequest
}

// diffRegressions are policy sets and requests that found differences, or would if the
// translator let go of what it guards against, kept.
func diffRegressions() []diffCase {
	allow := func(rules ...model.Rule) *model.AuthorizationPolicyDoc {
		return &model.AuthorizationPolicyDoc{
			TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindAuthorizationPolicy},
			Metadata: model.ObjectMeta{Namespace: genNamespace, Name: "allow"},
			Spec:     model.AuthorizationPolicySpec{Action: model.ActionAllow, Rules: rules},
		}
	}
	frontend := "spiffe://td.test/ns/demo/sa/frontend"
	return []diffCase{{
		// A header sent twice: Envoy's matcher sees "globex,acme", the engine each line.
		set: &genSet{defaultDecision: model.DecisionDeny, expressible: true, policies: []*model.AuthorizationPolicyDoc{
			allow(model.Rule{When: []model.Condition{{Header: "x-tenant", ValueMatch: model.ValueMatch{Equals: ptr("acme")}}}}),
		}},
		requests: []*genRequest{
			{caller: frontend, method: "GET", target: "/", headers: [][2]string{{"x-tenant", "globex"}, {"x-tenant", "acme"}}},
			{caller: frontend, method: "GET", target: "/", headers: [][2]string{{"x-tenant", "acme"}}, plain: true},
			{caller: frontend, method: "GET", target: "/", headers: [][2]string{{"x-tenant", "acme,globex"}}},
		},
	}, {
		// Dot segments and encodings: Envoy normalises, the engine decodes once more.
		set: &genSet{defaultDecision: model.DecisionDeny, expressible: true, policies: []*model.AuthorizationPolicyDoc{
			allow(model.Rule{To: &model.Operation{Paths: []string{"/admin", "/a/*/b"}}}),
		}},
		requests: []*genRequest{
			{caller: frontend, method: "GET", target: "/ad%6din"},
			{caller: frontend, method: "GET", target: "/api/%2e%2e/admin"},
			{caller: frontend, method: "GET", target: "/a//b"},
			{caller: frontend, method: "GET", target: "/a/x/b", plain: true},
			{caller: frontend, method: "GET", target: "/admin", plain: true},
			{caller: frontend, method: "GET", target: "/admin?a=%zz"},
		},
	}, {
		// Hosts: case, the port and one trailing dot do not count; a wildcard is one character
		// at least, which the trailing dot the engine removes is not.
		set: &genSet{defaultDecision: model.DecisionDeny, expressible: true, policies: []*model.AuthorizationPolicyDoc{
			allow(model.Rule{To: &model.Operation{Hosts: []string{"backend.*", "*.demo.svc"}}}),
		}},
		requests: []*genRequest{
			{caller: frontend, host: "backend..", method: "GET", target: "/", plain: true},
			{caller: frontend, host: "backend.", method: "GET", target: "/", plain: true},
			{caller: frontend, host: "Backend.X:80", method: "GET", target: "/", plain: true},
			{caller: frontend, host: ".demo.svc", method: "GET", target: "/", plain: true},
			{caller: frontend, host: "a.demo.svc.", method: "GET", target: "/", plain: true},
			{caller: frontend, host: "a.demo.svc..", method: "GET", target: "/", plain: true},
			{caller: frontend, host: "a:b.demo.svc", method: "GET", target: "/"},
		},
	}, {
		// "*" is any authenticated workload, never a plaintext caller.
		set: &genSet{defaultDecision: model.DecisionDeny, expressible: true, policies: []*model.AuthorizationPolicyDoc{
			allow(model.Rule{From: &model.Source{Principals: []string{"*"}}}),
		}},
		requests: []*genRequest{
			{caller: "", method: "GET", target: "/", plain: true},
			{caller: frontend, method: "GET", target: "/", plain: true},
		},
	}, {
		// Tokens: Envoy answers a token for another audience 403 where the service says 401 (the
		// listener's local reply mapper makes it 401); a list in a list is no element; a number
		// is not its spelling; Envoy verifies a token whose iat is ahead, as the service now does.
		set: &genSet{defaultDecision: model.DecisionDeny, expressible: true, providers: 1, policies: []*model.AuthorizationPolicyDoc{
			allow(model.Rule{From: &model.Source{JWT: &model.JWTRequirement{Claims: []model.ClaimMatch{
				{Claim: "tier", ValueMatch: model.ValueMatch{In: []string{"gold", "silver"}}},
			}}}}),
		}},
		requests: []*genRequest{
			regressionToken(map[string]any{"aud": "frontend", "tier": "gold"}, false),
			regressionToken(map[string]any{"tier": []any{[]any{"gold"}}}, true),
			regressionToken(map[string]any{"tier": []any{"x", "silver"}}, true),
			regressionToken(map[string]any{"tier": 3}, true),
			regressionToken(map[string]any{"tier": "gold", "iat": time.Now().Add(time.Hour).Unix()}, true),
			regressionToken(map[string]any{"tier": "gold silver"}, true),
		},
	}}
}

// regressionToken is a request from the frontend with a token of idp's, with these claims over
// the usual ones; verified says whether idp verifies it.
func regressionToken(claims map[string]any, verified bool) *genRequest {
	now := time.Now()
	c := map[string]any{"iss": genIssuer, "sub": "alice", "aud": "backend", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	maps.Copy(c, claims)
	q := &genRequest{caller: "spiffe://td.test/ns/demo/sa/frontend", method: "GET", target: "/", plain: true, token: fmt.Sprint(claims),
		headers: [][2]string{{"Authorization", "Bearer " + genKeys().idp.Sign(panicTB{}, c, nil)}}}
	if verified {
		q.claims, q.provider = c, "demo/idp"
	}
	return q
}

type diffHarness struct {
	envoy   *envoytest.Envoy
	cache   cachev3.SnapshotCache
	mesh    *source.Publisher
	authz   *authzserver.Server
	ca      *testca.CA
	node    string
	appPort uint32
	opts    Options
	sds     cachev3.SnapshotCache
	clients map[string]*diffConn // by listener and caller
	ports   map[string]int       // listener ports
	svids   map[string]*testca.SVID
	h2      map[string]*http.Client // by listener and caller

	mu      sync.Mutex
	acked   map[string]string // last version Envoy accepted, by type (routes, filter configurations)
	nack    string
	ackSeen chan struct{}
	version int

	sets, nativeSets, requests, native, early int
	// envoyDecided maps the decision id of each request the native listener's RBAC filters
	// decided (the stream id Envoy answers with) to the status answered; decisions is the
	// authorization service's decision log, where each must have its record (issue 16 item 3).
	envoyDecided map[string]envoyDecision
	// serviceDecided is the decision id of each request the extAuthz listener answered.
	serviceDecided map[*genRequest]string
	decisions      *lockedBuffer
	// allowed is the set's ext_authz allowed_headers (nil: every header), and sent the header
	// names of the checks the service took since the set was pushed: never one outside it.
	allowed map[string]bool
	sent    map[string]bool
	// logEntries is how many access log entries Envoy sent: one per request it decided, none
	// for the requests it passed to ext_authz (which writes their records itself).
	logEntries atomic.Int64
}

// noteHeaders keeps the header names of the checks the service takes.
func (h *diffHarness) noteHeaders(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c, ok := req.(*authv3.CheckRequest); ok {
		h.mu.Lock()
		for _, hv := range c.GetAttributes().GetRequest().GetHttp().GetHeaderMap().GetHeaders() {
			h.sent[hv.GetKey()] = true
		}
		h.mu.Unlock()
	}
	return handler(ctx, req)
}

// checkSentHeaders: the checks since the set was pushed carried only the headers the translator
// allowed. That they carried every header a decision reads shows in the statuses: the extAuthz
// listener decides as RBAC, which sees them all.
func (h *diffHarness) checkSentHeaders(t *testing.T, label string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.allowed == nil {
		return
	}
	for name := range h.sent {
		if !h.allowed[name] {
			t.Errorf("%s: the check carried header %q, not in allowed_headers %v", label, name, slices.Sorted(maps.Keys(h.allowed)))
		}
	}
}

// countLogEntries counts the entries of every access log stream the service takes.
func (h *diffHarness) countLogEntries(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &countingStream{ServerStream: ss, n: &h.logEntries})
}

type countingStream struct {
	grpc.ServerStream
	n *atomic.Int64
}

func (c *countingStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	if msg, ok := m.(*alsv3.StreamAccessLogsMessage); ok && err == nil {
		c.n.Add(int64(len(msg.GetHttpLogs().GetLogEntry())))
	}
	return err
}

// lockedBuffer is an io.Writer safe for the decision log's flusher and the test's reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// envoyDecision is a request Envoy decided and its status.
type envoyDecision struct {
	status  int
	request *genRequest
}

// noteDecision keeps the decision id a native listener's answer carries when Envoy decided it:
// a stream id (a UUID), where the authorization service's ids are 26 characters.
// The extAuthz listener's ids are kept by request, to compare the two records of one request.
func (h *diffHarness) noteDecision(listener string, resp *http.Response, q *genRequest) {
	id := resp.Header.Get(model.HeaderDecisionID)
	switch {
	case listener == diffNative && len(id) == 36:
		h.envoyDecided[id] = envoyDecision{status: resp.StatusCode, request: q}
	case listener == diffExtAuthz && id != "":
		h.serviceDecided[q] = id
	}
}

// checkDecisionLog: every request Envoy decided has exactly one decision-log record, under the id
// Envoy answered with, with the status Envoy answered and the destination, the verified token's
// issuer and subject, the code and the dry run's outcome of the service's record of the same
// request; and nothing else was logged from Envoy's side.
func (h *diffHarness) checkDecisionLog(t *testing.T) {
	t.Helper()
	if len(h.envoyDecided) != h.native {
		t.Errorf("%d answers carried an Envoy decision id, RBAC decided %d requests", len(h.envoyDecided), h.native)
	}
	var recs []authzserver.Record
	service := map[string]authzserver.Record{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs = recs[:0]
		log := h.decisions.String()
		log = log[:strings.LastIndexByte(log, '\n')+1] // complete lines: the flusher may be mid-line
		for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
			var r authzserver.Record
			if line == "" {
				continue
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("decision log line %q: %v", line, err)
			}
			if len(r.DecisionID) == 36 {
				recs = append(recs, r)
			} else {
				service[r.DecisionID] = r
			}
		}
		if len(recs) >= len(h.envoyDecided) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		d, ok := h.envoyDecided[r.DecisionID]
		status, q := d.status, d.request
		switch {
		case !ok || seen[r.DecisionID]:
			t.Errorf("record %s: no such Envoy decision, or a second record", r.DecisionID)
		case r.HTTPStatus != status || r.Destination.Service != genService || (status == http.StatusOK) != (r.Decision == "ALLOW"):
			t.Errorf("record %+v: Envoy answered %d", r, status)
		case q.claims != nil && (r.JWT == nil || r.JWT.Issuer != q.claims["iss"] || r.JWT.Subject != q.claims["sub"]):
			t.Errorf("record %s of %s: JWT %+v, not the verified token's issuer and subject", r.DecisionID, q, r.JWT)
		case status == http.StatusUnauthorized && (r.Code != "jwt_invalid" || r.JWT == nil || r.JWT.Error == ""):
			t.Errorf("record %s of %s: a refused token is logged as %s, JWT %+v", r.DecisionID, q, r.Code, r.JWT)
		default:
			other, ok := service[h.serviceDecided[q]]
			switch {
			case !ok:
				t.Errorf("record %s of %s: the service's record of the request is missing", r.DecisionID, q)
			case r.Code != other.Code || (r.DryRun == nil) != (other.DryRun == nil):
				t.Errorf("record %s of %s: code %s, dry run %+v; the service's %s, %+v", r.DecisionID, q, r.Code, r.DryRun, other.Code, other.DryRun)
			case r.DryRun != nil && (r.DryRun.Allow != other.DryRun.Allow || r.DryRun.Code != other.DryRun.Code || r.DryRun.Changed != other.DryRun.Changed):
				t.Errorf("record %s of %s: dry run %+v; the service's %+v", r.DecisionID, q, r.DryRun, other.DryRun)
			}
		}
		seen[r.DecisionID] = true
	}
	if len(seen) != len(h.envoyDecided) {
		t.Errorf("%d of %d Envoy decisions have a decision-log record", len(seen), len(h.envoyDecided))
	}
	// The log's filter lets through only what Envoy decided: an entry per other request costs
	// the proxy a serialization and a gRPC write per request (measured: 3 points of a core per
	// 1,000 rps), and the service a discarded message.
	if n := h.logEntries.Load(); n != int64(len(h.envoyDecided)) {
		t.Errorf("Envoy sent %d access log entries for %d requests it decided", n, len(h.envoyDecided))
	}
}

func newDiffHarness(t *testing.T) *diffHarness {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca := testca.New(t, genTrustDomain)
	backendID := model.WorkloadID(spiffeid.RequireTrustDomainFromString(genTrustDomain), genNamespace, genService)
	authzID := spiffeid.RequireFromString("spiffe://td.test/ns/portcullis-system/sa/authz")
	backend := ca.SVID(t, backendID.String())
	h := &diffHarness{envoyDecided: map[string]envoyDecision{}, serviceDecided: map[*genRequest]string{}, decisions: &lockedBuffer{}, ca: ca, mesh: &source.Publisher{}, clients: map[string]*diffConn{}, ports: map[string]int{}, svids: map[string]*testca.SVID{}, h2: map[string]*http.Client{}, ackSeen: make(chan struct{}, 1), acked: map[string]string{}}

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "app") }))
	t.Cleanup(app.Close)
	h.appPort = uint32(app.Listener.Addr().(*net.TCPAddr).Port)

	// The authorization service, over mTLS as proxies reach it.
	var err error
	h.authz, err = authzserver.New(authzserver.Options{
		Logger: slog.New(slog.DiscardHandler), TracerProvider: noop.NewTracerProvider(), Source: h.mesh, DecisionLog: h.decisions,
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = h.authz.Run(ctx) }()
	authzLis := listen(t)
	authzGRPC := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerTLS(ca.SVID(t, authzID.String())))),
		grpc.StreamInterceptor(h.countLogEntries), grpc.UnaryInterceptor(h.noteHeaders))
	h.authz.Register(authzGRPC)
	h.authz.AccessLog().Register(authzGRPC)
	go func() { _ = authzGRPC.Serve(authzLis) }()
	t.Cleanup(authzGRPC.Stop)
	h.opts = Options{AuthzAddress: authzLis.Addr().String(), AuthzID: authzID, JWKS: jwt.EnvoyJWKS}

	// xDS in plaintext on loopback: ADS, whose route ACKs are awaited, and SDS from a cache of
	// its own (Envoy asks for each secret on a stream of its own, which an ADS cache would
	// never answer: it waits for a request naming every secret).
	h.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	xds := serverv3.NewServer(ctx, h.cache, serverv3.CallbackFuncs{StreamRequestFunc: h.onRequest})
	h.sds = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	xdsLis := listen(t)
	xdsGRPC := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(xdsGRPC, xds)
	secretv3.RegisterSecretDiscoveryServiceServer(xdsGRPC, serverv3.NewServer(ctx, h.sds, nil))
	go func() { _ = xdsGRPC.Serve(xdsLis) }()
	t.Cleanup(xdsGRPC.Stop)
	cert := &tlsv3.Secret{Name: backendID.String(), Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inlineBytes(backend.CertPEM), PrivateKey: inlineBytes(backend.KeyPEM),
	}}}
	bundle := &tlsv3.Secret{Name: backendID.TrustDomain().IDString(), Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inlineBytes(ca.CertPEM),
	}}}
	secrets, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{resource.SecretType: {cert, bundle}})
	if err != nil {
		t.Fatal(err)
	}

	// The first set has the listeners come up; Envoy starts after its snapshot is in the cache.
	set := &genSet{defaultDecision: model.DecisionDeny, expressible: true}
	h.push(t, set)
	if err := h.sds.SetSnapshot(ctx, h.node, secrets); err != nil {
		t.Fatal(err)
	}
	xdsPort := xdsLis.Addr().(*net.TCPAddr).Port
	h.envoy = envoytest.Start(t, fmt.Sprintf(diffBootstrap, h.node, xdsPort), envoytest.Options{})
	for _, name := range []string{diffNative, diffExtAuthz} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			port, err := h.envoy.ListenerPort(ctx, name)
			if err == nil && port > 0 {
				h.ports[name] = port
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("listener %s: %v", name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	h.waitAck(t)
	return h
}

// diffBootstrap: ADS for listeners, clusters, routes and filter configurations; SDS on the same
// server for the backend's certificate and bundle.
const diffBootstrap = `
node: {id: %[1]q, cluster: backend}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: portcullis-xds}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: portcullis-xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: portcullis-xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}}}]}]
  - name: portcullis-sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: portcullis-sds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}}}]}]
`

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func (h *diffHarness) onRequest(_ int64, req *discoveryv3.DiscoveryRequest) error {
	if req.GetTypeUrl() != resource.RouteType && req.GetTypeUrl() != resource.ExtensionConfigType {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := req.GetErrorDetail(); d != nil {
		h.nack = d.GetMessage()
	} else {
		h.acked[req.GetTypeUrl()] = req.GetVersionInfo()
	}
	select {
	case h.ackSeen <- struct{}{}:
	default:
	}
	return nil
}

// waitAck waits until Envoy has accepted the current routes and filter configurations (the
// ext_authz filter's allowed headers among them) and the authorization service has compiled the
// current mesh.
func (h *diffHarness) waitAck(t *testing.T) {
	t.Helper()
	want := strconv.Itoa(h.version)
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		routes, filters, nack := h.acked[resource.RouteType], h.acked[resource.ExtensionConfigType], h.nack
		h.mu.Unlock()
		if nack != "" {
			t.Fatalf("Envoy rejected the routes or filter configurations: %s", nack)
		}
		if routes == want && filters == want {
			break
		}
		select {
		case <-h.ackSeen:
		case <-deadline:
			t.Fatalf("Envoy did not ACK version %s (routes at %q, filter configurations at %q)", want, routes, filters)
		}
	}
	m, _ := h.mesh.Current()
	for h.authz.Status().MeshVersion != m.Version {
		select {
		case <-deadline:
			t.Fatalf("the authorization service did not load mesh %s", m.Version)
		case <-time.After(time.Millisecond):
		}
	}
}

// translateAs translates backend-1 under an engine setting, its listener and route renamed.
func (h *diffHarness) translateAs(t *testing.T, set *genSet, engine model.AuthzEngine, listener string) (*model.Mesh, *Resources) {
	t.Helper()
	m, problems := genMesh(set, engine, h.appPort)
	if len(problems) > 0 {
		t.Fatalf("generated mesh refused: %v\n%s", problems, set)
	}
	w := m.Workload("backend-1.demo")
	if w == nil {
		t.Fatal("no workload backend-1.demo")
	}
	p, err := model.NewProxy(model.NewMeshContext(m), w)
	if err != nil {
		t.Fatal(err)
	}
	h.node = p.NodeID
	res, err := Translate(Input{Proxy: p, Endpoints: map[model.Ref][]model.Endpoint{}}, h.opts)
	if err != nil {
		t.Fatalf("translate: %v\n%s", err, set)
	}
	for _, r := range res.Routes {
		if strings.HasPrefix(r.GetName(), "inbound|") {
			r.Name = listener
		}
	}
	for _, l := range res.Listeners {
		if l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			continue
		}
		l.Name = listener
		l.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 0}
		for _, c := range l.GetFilterChains() {
			for _, f := range c.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				hcm.GetRds().RouteConfigName = listener
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}
			}
		}
	}
	return m, res
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := Any(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// allowedHeaders reads the ext_authz filter's allowed_headers from the translation (nil: all).
func allowedHeaders(t *testing.T, res *Resources) map[string]bool {
	t.Helper()
	for _, e := range res.Extensions {
		if e.GetName() != filterExtAuthz {
			continue
		}
		cfg := &extauthzv3.ExtAuthz{}
		if err := e.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.GetAllowedHeaders() == nil {
			return nil
		}
		names := map[string]bool{}
		for _, p := range cfg.GetAllowedHeaders().GetPatterns() {
			names[p.GetExact()] = true
		}
		return names
	}
	t.Fatal("no ext_authz filter configuration")
	return nil
}

// push translates a set both ways and sends it to Envoy and the authorization service.
func (h *diffHarness) push(t *testing.T, set *genSet) AuthzPlacement {
	t.Helper()
	m, native := h.translateAs(t, set, model.EngineAuto, diffNative)
	_, ext := h.translateAs(t, set, model.EngineExtAuthz, diffExtAuthz)
	var placement AuthzPlacement
	for _, p := range native.Authz {
		placement = p
	}
	h.version++
	var listeners, routes []types.Resource
	for _, r := range []*Resources{native, ext} {
		for _, l := range r.Listeners {
			if l.GetName() == diffNative || l.GetName() == diffExtAuthz {
				listeners = append(listeners, l)
			}
		}
		for _, rc := range r.Routes {
			if rc.GetName() == diffNative || rc.GetName() == diffExtAuthz {
				routes = append(routes, rc)
			}
		}
	}
	snap, err := cachev3.NewSnapshot(strconv.Itoa(h.version), map[resource.Type][]types.Resource{
		resource.ListenerType:        listeners,
		resource.RouteType:           routes,
		resource.ClusterType:         asResources(native.Clusters),
		resource.EndpointType:        asResources(native.Endpoints),
		resource.ExtensionConfigType: asResources(native.Extensions),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
	if err := h.cache.SetSnapshot(context.Background(), h.node, snap); err != nil {
		t.Fatal(err)
	}
	h.mesh.Publish(m)
	h.mu.Lock()
	h.allowed, h.sent = allowedHeaders(t, native), map[string]bool{}
	h.mu.Unlock()
	return placement
}

func asResources[T types.Resource](list []T) []types.Resource {
	out := make([]types.Resource, len(list))
	for i, r := range list {
		out[i] = r
	}
	return out
}

// check pushes one policy set and compares the two listeners' answers to its requests.
func (h *diffHarness) check(t *testing.T, label string, set *genSet, reqs []*genRequest) {
	t.Helper()
	placement := h.push(t, set)
	h.waitAck(t)
	if placement.Native != set.expressible {
		t.Errorf("%s: the translator says native=%v (%s), the generator expressible=%v (%s)\n%s", label, placement.Native, placement.Reason, set.expressible, set.why, set)
		return
	}
	before := h.rbacDecisions(t)
	plain, early := 0, 0
	for _, q := range reqs {
		got := h.send(t, diffNative, q)
		want := h.send(t, diffExtAuthz, q)
		if got != want {
			t.Errorf("%s: %s: Envoy (engine auto) answered %d, the engine %d\n%s", label, q, got, want, set)
		}
		if want == http.StatusBadRequest || want == http.StatusTemporaryRedirect || want < 0 {
			early++
		}
		if q.plain {
			plain++
		}
	}
	native := h.rbacDecisions(t) - before
	h.checkSentHeaders(t, label)
	switch {
	case !set.expressible && native != 0:
		t.Errorf("%s: RBAC decided %d requests of a set with an inexpressible policy (%s)", label, native, set.why)
	case set.expressible && native < plain:
		t.Errorf("%s: RBAC decided %d requests, fewer than the %d plain ones\n%s", label, native, plain, set)
	}
	h.sets++
	h.requests += len(reqs)
	h.native += native
	h.early += early
	if set.expressible {
		h.nativeSets++
	}
}

// rbacDecisions is how many requests Envoy has decided: those the DENY filter (the first of the
// two, on every native route) evaluated, and those whose token jwt_authn refused before it.
func (h *diffHarness) rbacDecisions(t *testing.T) int {
	t.Helper()
	body, err := h.envoy.Admin(context.Background(), "/stats?filter=^http%5C.inbound%5C.(rbac%5C.deny%5C.(allowed|denied)|jwt_authn%5C.denied)$")
	if err != nil {
		t.Fatal(err)
	}
	n, err := envoytest.SumCounters(body)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// diffConn is a keep-alive HTTP/1.1 connection to a listener as one caller.
type diffConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// send writes a request as generated (method, target and header case as they are) and returns
// the status, -1 when Envoy closed the connection without one.
func (h *diffHarness) send(t *testing.T, listener string, q *genRequest) int {
	t.Helper()
	if q.h2 {
		return h.sendH2(t, listener, q)
	}
	key := listener + "|" + q.caller
	for attempt := 0; ; attempt++ {
		c := h.clients[key]
		if c == nil {
			c = h.dial(t, listener, q.caller)
			h.clients[key] = c
		}
		var b strings.Builder
		host := q.host
		if host == "" {
			host = "backend"
		}
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", q.method, q.target, host)
		for _, kv := range q.headers {
			fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
		}
		b.WriteString("\r\n")
		_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(c.conn, b.String())
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(c.br, nil)
		}
		if err != nil {
			_ = c.conn.Close()
			delete(h.clients, key)
			if attempt == 0 {
				continue // the connection was closed after the previous request: once more
			}
			return -1
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		h.noteDecision(listener, resp, q)
		if resp.Close {
			_ = c.conn.Close()
			delete(h.clients, key)
		}
		return resp.StatusCode
	}
}

// sendH2 sends a request over HTTP/2 (Go's client: header names in lower case, the target as
// generated). A request the client refuses to send is -2 on both listeners alike.
func (h *diffHarness) sendH2(t *testing.T, listener string, q *genRequest) int {
	t.Helper()
	key := listener + "|" + q.caller
	c := h.h2[key]
	if c == nil {
		cfg := h.ca.ClientTLS(h.svid(t, q.caller), model.WorkloadID(spiffeid.RequireTrustDomainFromString(genTrustDomain), genNamespace, genService))
		cfg.NextProtos = []string{"h2"}
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		c = &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		h.h2[key] = c
	}
	u := &url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(h.ports[listener]), Opaque: q.target}
	req := &http.Request{Method: q.method, URL: u, Host: cmp.Or(q.host, "backend"), Header: http.Header{}, Proto: "HTTP/2.0", ProtoMajor: 2}
	for _, kv := range q.headers {
		req.Header.Add(kv[0], kv[1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return -2
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	h.noteDecision(listener, resp, q)
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s: answered over %s, not HTTP/2", q, resp.Proto)
	}
	return resp.StatusCode
}

func (h *diffHarness) dial(t *testing.T, listener, caller string) *diffConn {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.ports[listener]))
	var conn net.Conn
	var err error
	if caller == "" {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
	} else {
		svid := h.svid(t, caller)
		cfg := h.ca.ClientTLS(svid, model.WorkloadID(spiffeid.RequireTrustDomainFromString(genTrustDomain), genNamespace, genService))
		cfg.NextProtos = []string{"http/1.1"}
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	}
	if err != nil {
		t.Fatalf("dial %s as %q: %v", listener, caller, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &diffConn{conn: conn, br: bufio.NewReader(conn)}
}

func (h *diffHarness) svid(t *testing.T, id string) *testca.SVID {
	if s, ok := h.svids[id]; ok {
		return s
	}
	s := h.ca.SVID(t, id)
	h.svids[id] = s
	return s
}
