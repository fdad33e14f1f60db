package attack

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// authzClient calls the control plane's ext_authz service directly, with src's SVID: what any
// workload of the mesh can do without going through its Envoy.
func (e *env) authzClient(src *workloadapi.X509Source) authv3.AuthorizationClient {
	return authv3.NewAuthorizationClient(e.dial(e.c.AuthzAddr, credentials.NewTLS(tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(controlPlID)))))
}

func (e *env) dial(addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// checkRequest is a CheckRequest as Envoy sends one (header_map: a line per header), for the
// backend, claiming principal as the caller.
func checkRequest(principal, method, path string, headers ...string) *authv3.CheckRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte(method)}, {Key: ":path", RawValue: []byte(path)}, {Key: ":authority", RawValue: []byte("backend")},
	}}
	for i := 0; i+1 < len(headers); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: headers[i], RawValue: []byte(headers[i+1])})
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: principal},
		Destination: &authv3.AttributeContext_Peer{Principal: backendID.String()},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "backend", Scheme: "https", Protocol: "HTTP/2", HeaderMap: hm,
		}},
		ContextExtensions: map[string]string{"service": "backend", "namespace": "demo"},
	}}
}

// checkStatus is the HTTP status a Check answered, or the gRPC error.
func checkStatus(c authv3.AuthorizationClient, req *authv3.CheckRequest) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		return 0, err
	}
	if resp.GetOkResponse() != nil {
		return 200, nil
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), nil
}

// checkAttacks call ext_authz directly, past Envoy's normalisation: a workload of the mesh can.
func checkAttacks(e *env, r *report) {
	c := e.authzClient(e.frontend)
	for _, tc := range []struct {
		name string
		req  *authv3.CheckRequest
		want int
	}{
		{"direct Check: ..; path", checkRequest(frontendID.String(), "GET", "/api/..;/admin/x"), 400},
		{"direct Check: overlong UTF-8 dots", checkRequest(frontendID.String(), "GET", "/api/%c0%ae%c0%ae/admin/x"), 400},
		{"direct Check: invalid UTF-8 after decoding", checkRequest(frontendID.String(), "GET", "/api/%ff"), 400},
		{"direct Check: method delete", checkRequest(frontendID.String(), "delete", "/api/x"), 400},
		{"direct Check: x-debug 0 then 1", checkRequest(frontendID.String(), "GET", "/api/x", "x-debug", "0", "x-debug", "1"), 403},
		{"direct Check: an allowed request (control)", checkRequest(frontendID.String(), "GET", "/api/x"), 200},
	} {
		r.check("check", tc.name, fmt.Sprint(tc.want), func() (string, bool) {
			code, err := checkStatus(c, tc.req)
			return status(code, "", err), err == nil && code == tc.want
		})
	}
	// A proxy reports its callers; the log must say which proxy reported what.
	if _, err := checkStatus(c, checkRequest("spiffe://attack.test/ns/demo/sa/admin", "GET", "/api/claimed")); err != nil {
		e.t.Logf("claimed-principal check: %v", err)
	}
	r.check("check", "direct Check claiming another caller", "the decision log names the proxy that asked", func() (string, bool) {
		rec, ok := e.decision("/api/claimed")
		if !ok {
			return "no record", false
		}
		return fmt.Sprintf("caller %q, source %q", rec.Caller, rec.Source.Principal), rec.Caller == frontendID.String()
	})
	r.check("check", "decisions made through Envoy", "each record names the backend's proxy as the caller", func() (string, bool) {
		var n, wrong int
		for _, rec := range e.decisions() {
			if strings.HasPrefix(rec.Request.Path, "/api/m") || strings.HasPrefix(rec.Request.Path, "/jwt/") {
				n++
				if rec.Caller != backendID.String() {
					wrong++
				}
			}
		}
		return fmt.Sprintf("%d records, %d with another caller", n, wrong), n > 0 && wrong == 0
	})
	r.check("check", "Check without a client certificate", "refused at the handshake", func() (string, bool) {
		noCert := e.dial(e.c.AuthzAddr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // the attacker does not care who answers
		_, err := checkStatus(authv3.NewAuthorizationClient(noCert), checkRequest(frontendID.String(), "GET", "/api/x"))
		return fmt.Sprint(err), err != nil
	})
	r.check("check", "the decision log already existed with mode 0644", "0600 once the control plane opened it", func() (string, bool) {
		st, err := os.Stat(e.decisionLog)
		if err != nil {
			return err.Error(), false
		}
		return st.Mode().Perm().String(), st.Mode().Perm() == 0o600
	})
}

// record is the part of a decision-log line the suite reads.
type record struct {
	DecisionID string   `json:"decision_id"`
	DurationUS int64    `json:"duration_us"`
	EvalUS     int64    `json:"eval_us"`
	Code       string   `json:"code"`
	Reason     string   `json:"reason"`
	Errors     []string `json:"errors"`
	Caller     string   `json:"caller"`
	Source     struct {
		Principal string `json:"principal"`
	} `json:"source"`
	Request struct {
		Path string `json:"path"`
	} `json:"request"`
}

// decisions reads the decision log.
func (e *env) decisions() []record {
	f, err := os.Open(e.decisionLog)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var out []record
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		var rec record
		if json.Unmarshal(s.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// decisionByID waits for the record of a decision.
func (e *env) decisionByID(id string) (record, bool) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, rec := range e.decisions() {
			if rec.DecisionID == id {
				return rec, true
			}
		}
	}
	return record{}, false
}

// decision waits (the log is flushed every 200ms) for the record of the last request to path;
// every earlier record is then in the log too.
func (e *env) decision(path string) (record, bool) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := e.decisions()
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Request.Path == path {
				return recs[i], true
			}
		}
		if time.Now().After(deadline) {
			return record{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// regoAttacks: a module that never ends (or fills memory) must cost a decision its budget and
// fail closed, and a module that could allocate without bound in one call must not load.
func regoAttacks(e *env, r *report) {
	r.check("rego", "a request that sets off a Rego module's unbounded loop", "403: the evaluation stopped by its budget; one Check, not retried; the service keeps deciding", func() (string, bool) {
		retries := e.envoyStat("cluster.portcullis-authz.upstream_rq_retry")
		start := time.Now()
		code, body, err := e.do(e.http2, "GET", "/api/bomb", http.Header{"X-Bomb": {"1"}})
		took := time.Since(start)
		after, _, err2 := e.do(e.http2, "GET", "/api/after-bomb", nil)
		rec, _ := e.decision("/api/bomb")
		reason := strings.Join(rec.Errors, "; ")
		retriesAfter := e.envoyStat("cluster.portcullis-authz.upstream_rq_retry")
		observed := fmt.Sprintf("%s after %s (evaluated %dms); %q; Envoy's Check retries %d → %d; next request %d",
			status(code, body, err), took.Round(time.Millisecond), rec.EvalUS/1000, reason, retries, retriesAfter, after)
		return observed, err == nil && err2 == nil && code == 403 && strings.Contains(reason, "budget") && rec.EvalUS < 250_000 &&
			retries >= 0 && retriesAfter == retries && after == 200 && len(e.app.got("/api/bomb")) == 0
	})
	r.check("rego", "a policy whose module calls bits.lsh(1, 1e12)", "refused; the last good policies stay live", func() (string, bool) {
		const module = `apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-bits, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rego:
    module: |
      package bits
      match if bits.lsh(1, 1000000000000) > 0
`
		e.c.Write("bits.yaml", module)
		defer func() { _ = os.Remove(filepath.Join(e.c.ConfigDir, "bits.yaml")) }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(e.c.CP.Log(), "bits.lsh is not available") {
			if time.Now().After(deadline) {
				return "the control plane did not report the module", false
			}
			time.Sleep(50 * time.Millisecond)
		}
		code, body, err := e.do(e.http2, "GET", "/api/still", nil)
		return "reported: bits.lsh is not available; then " + status(code, body, err), err == nil && code == 200
	})
}

// envoyStat reads a counter of the backend's Envoy (-1 when it cannot).
func (e *env) envoyStat(name string) int {
	text, err := get("http://" + e.envoyAdmin + "/stats?filter=^" + regexp.QuoteMeta(name) + "$")()
	if err != nil {
		return -1
	}
	_, v, ok := strings.Cut(strings.TrimSpace(text), ": ")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}
