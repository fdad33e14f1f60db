package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/model"
)

// rbacBootstrap is an inbound listener deciding in Envoy as the translator's RBAC filters do
// (the model's prefixes and policy names): a DENY filter, an ALLOW filter with a dry-run DENY
// policy as shadow rules, and the decision access log to this service over mTLS.
const rbacBootstrap = bootstrapInbound + `          access_log:
          - name: envoy.access_loggers.http_grpc
            filter:
              metadata_filter:
                matcher: {filter: envoy.filters.http.rbac, path: [{key: %[7]q}], value: {present_match: true}}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
              additional_request_headers_to_log: [traceparent]
              common_config:
                log_name: %[8]q
                transport_api_version: V3
                buffer_flush_interval: 0.05s
                grpc_service: {envoy_grpc: {cluster_name: authz}}
                custom_tags:
                - {tag: %[9]q, literal: {value: backend}}
                - {tag: %[10]q, literal: {value: demo}}
                - {tag: %[11]q, literal: {value: "8080"}}
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: app}}]
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules_stat_prefix: %[12]q
              shadow_rules_stat_prefix: %[12]q
              rules:
                action: DENY
                policies:
                  demo/backend-deny/no-debug:
                    permissions: [{url_path: {path: {prefix: /debug/}}}]
                    principals: [{any: true}]
              shadow_rules:
                action: DENY
                policies:
                  demo/secrets-dry-run/no-secrets:
                    permissions: [{url_path: {path: {prefix: /api/secret}}}]
                    principals: [{any: true}]
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules_stat_prefix: %[13]q
              rules:
                action: ALLOW
                policies:
                  demo/backend-allow/frontend-reads:
                    permissions: [{url_path: {path: {prefix: /api/}}}]
                    principals: [{authenticated: {principal_name: {exact: "spiffe://portcullis.local/ns/demo/sa/frontend"}}}]
` + bootstrapUpstreams

// TestEnvoyDecisionsReachTheDecisionLog: requests a real Envoy's RBAC filters decide reach the
// decision log through its gRPC access log, with the record, metric and span ext_authz's
// decisions get.
func TestEnvoyDecisionsReachTheDecisionLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Envoy")
	}
	envoytest.Require(t)
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	ca := testca.New(t, td.Name())
	authzID := "spiffe://portcullis.local/ns/portcullis/sa/authz"
	authzSVID := ca.SVID(t, authzID)
	proxySVID := ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend")
	f := newFixture(t, "", func(o *Options) {
		o.Callers = &Callers{TrustDomain: td, NotProxies: []spiffeid.ID{spiffeid.RequireFromString(authzID)}}
	})
	g := grpc.NewServer(append(GRPCServerOptions(), grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(
		authzSVID.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td)))))...)
	f.srv.AccessLog().Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }() // returns when stopped
	t.Cleanup(g.Stop)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello") }))
	t.Cleanup(app.Close)

	bootstrap := fmt.Sprintf(rbacBootstrap, yamlString(proxySVID.CertPEM), yamlString(proxySVID.KeyPEM), yamlString(ca.CertPEM),
		app.Listener.Addr().(*net.TCPAddr).Port, ln.Addr().(*net.TCPAddr).Port, authzID,
		model.RBACAllowPrefix+"enforced_engine_result", model.AccessLogName,
		model.AccessLogTagService, model.AccessLogTagNamespace, model.AccessLogTagPort, model.RBACDenyPrefix, model.RBACAllowPrefix)
	envoy := envoytest.Start(t, bootstrap, envoytest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port, err := envoy.ListenerPort(ctx, "inbound")
	if err != nil {
		t.Fatal(err)
	}
	as := func(id string) *http.Client {
		svid := ca.SVID(t, id)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{svid.TLSCertificate()}, RootCAs: ca.Pool(),
			InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate checks chain and ID
			VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(ca.Bundle(), tlsconfig.AuthorizeID(proxySVID.ID)),
		}}}
	}
	frontend, other := as("spiffe://portcullis.local/ns/demo/sa/frontend"), as("spiffe://portcullis.local/ns/demo/sa/other")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	cases := []struct {
		name         string
		client       *http.Client
		path         string
		status       int
		code         policy.Code
		policy, rule string
		dryRun       bool // the dry-run policy matched, and would have denied
	}{
		{"allowed by a rule", frontend, "/api/items?token=secret", 200, policy.CodeAllowed, "demo/backend-allow", "frontend-reads", false},
		{"denied by a DENY rule", frontend, "/debug/vars", 403, policy.CodeDenied, "demo/backend-deny", "no-debug", false},
		{"no ALLOW for this caller", other, "/api/items", 403, policy.CodeDeniedDefault, "", "", false},
		{"a dry-run DENY that would have denied", frontend, "/api/secret", 200, policy.CodeAllowed, "demo/backend-allow", "frontend-reads", true},
	}
	for _, tc := range cases {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", port, tc.path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
	var recs []Record
	waitFor(t, "a record per request", func() bool { recs = f.records(t); return len(recs) >= len(cases) })
	if len(recs) != len(cases) {
		t.Fatalf("%d records for %d requests", len(recs), len(cases))
	}
	ids := map[string]bool{}
	for i, tc := range cases {
		r := recs[i]
		ids[r.DecisionID] = true
		// A dry-run policy applies to the destination: every record says what it would do.
		if r.Code != tc.code || r.Policy != tc.policy || r.Rule != tc.rule || r.HTTPStatus != tc.status || r.DryRun == nil {
			t.Fatalf("%s: record %+v", tc.name, r)
		}
		if r.DryRun.Changed != tc.dryRun || (tc.dryRun && (r.DryRun.Policy != "demo/secrets-dry-run" || r.DryRun.Allow || len(r.DryRun.Matches) != 1)) {
			t.Errorf("%s: dry run %+v", tc.name, r.DryRun)
		}
		want := RecordDest{Service: "backend", Namespace: "demo", Port: 8080}
		if r.Destination != want || r.Caller != proxySVID.ID.String() || r.TraceID != traceID || r.Source.Address != "127.0.0.1" ||
			!strings.HasPrefix(r.Source.Principal, "spiffe://portcullis.local/ns/demo/sa/") || r.Request.Method != "GET" {
			t.Errorf("%s: record %+v", tc.name, r)
		}
		if strings.Contains(r.Request.Path, "?") {
			t.Errorf("%s: the query string reached the decision log: %q", tc.name, r.Request.Path)
		}
	}
	if len(ids) != len(cases) || ids[""] {
		t.Errorf("decision ids %v: want one per request", ids)
	}
	var envoySpans int
	for _, s := range f.spans.GetSpans() {
		if s.Name == spanEnvoyDecision && s.SpanContext.TraceID().String() == traceID &&
			slices.Contains(s.Attributes, attribute.String("authz.engine", "envoy")) {
			envoySpans++
		}
	}
	if envoySpans != len(cases) {
		t.Errorf("%d Envoy decision spans in the request's trace, want %d", envoySpans, len(cases))
	}

	// Only proxies, and only under the decision log's name, write records.
	send := func(t *testing.T, as *testca.SVID, logName string) error {
		t.Helper()
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.MTLSClientConfig(as.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeID(authzSVID.ID)))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := alsv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		entry := &alogv3.HTTPAccessLogEntry{CommonProperties: &alogv3.AccessLogCommon{Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			rbacMetadata: {Fields: map[string]*structpb.Value{model.RBACAllowPrefix + "enforced_engine_result": structpb.NewStringValue("allowed")}},
		}}}}
		if err := stream.Send(&alsv3.StreamAccessLogsMessage{
			Identifier: &alsv3.StreamAccessLogsMessage_Identifier{LogName: logName},
			LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*alogv3.HTTPAccessLogEntry{entry}}},
		}); err != nil {
			return err
		}
		_, err = stream.CloseAndRecv()
		return err
	}
	for name, tc := range map[string]struct {
		as      *testca.SVID
		logName string
		want    codes.Code
	}{
		"the service itself is not a proxy": {authzSVID, model.AccessLogName, codes.PermissionDenied},
		"another access log":                {proxySVID, "access", codes.InvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			before := len(f.records(t))
			if err := send(t, tc.as, tc.logName); status.Code(err) != tc.want {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
			if n := len(f.records(t)); n != before {
				t.Errorf("%d records written", n-before)
			}
		})
	}
}
