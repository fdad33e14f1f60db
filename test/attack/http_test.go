package attack

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/authztest"
)

// shape is one request an attacker sends to the backend's inbound listener, as the frontend.
type shape struct {
	name    string
	client  *http.Client
	method  string
	path    string
	header  http.Header
	want    []int // acceptable statuses; 0 is a refused stream (HTTP/2 reset)
	reaches bool  // whether the application may see it
	// decided reports the path authorization decided on (from the decision log).
	decided bool
}

// send runs one request shape as an attack: the status must be one of want, and the
// application must see the request only when reaches says so.
func (e *env) send(r *report, class string, s shape) {
	expected := fmt.Sprintf("%v, the application never sees it", s.want)
	if s.reaches {
		expected = fmt.Sprintf("%v, the application sees it", s.want)
	}
	r.check(class, s.name, expected, func() (string, bool) {
		before := len(e.app.got(s.path))
		code, body, err := e.do(s.client, s.method, s.path, s.header)
		if err != nil && slices.Contains(s.want, 0) {
			code = 0 // refused: the stream was reset
		} else if err != nil {
			return status(code, body, err), false
		}
		saw := len(e.app.got(s.path)) - before
		observed := fmt.Sprintf("%s; the application saw it %d times", status(code, body, err), saw)
		if s.decided {
			var b struct {
				ID string `json:"decision_id"`
			}
			if json.Unmarshal([]byte(body), &b) == nil && b.ID != "" {
				if rec, ok := e.decisionByID(b.ID); ok {
					observed += fmt.Sprintf("; authorization decided on %s", rec.Request.Path)
				}
			}
		}
		return observed, slices.Contains(s.want, code) && (saw > 0) == s.reaches
	})
}

// methodAttacks: HTTP/2 carries ":method: delete" through Envoy (its HTTP/1.1 codec refuses it);
// frameworks upper-case it and run the DELETE handler that a DENY on DELETE protects.
func methodAttacks(e *env, r *report) {
	for _, s := range []shape{
		{name: "HTTP/2 :method: delete past a DENY on DELETE", client: e.http2, method: "delete", path: "/api/m1", want: []int{400}},
		{name: "HTTP/2 :method: Delete", client: e.http2, method: "Delete", path: "/api/m2", want: []int{400}},
		{name: "HTTP/1.1 method delete", client: e.http1, method: "delete", path: "/api/m3", want: []int{400}},
		{name: "HTTP/2 DELETE (the DENY itself)", client: e.http2, method: "DELETE", path: "/api/m4", want: []int{403}},
		{name: "HTTP/1.1 DELETE (the DENY itself)", client: e.http1, method: "DELETE", path: "/api/m5", want: []int{403}},
		{name: "HTTP/2 GET (allowed: the policy is not deny-all)", client: e.http2, method: "GET", path: "/api/m6", want: []int{200}, reaches: true},
	} {
		e.send(r, "method", s)
	}
}

// headerAttacks: a header sent twice reached policies joined ("1,1") and passed a DENY on "1";
// an underscore header reaches servers that read it as its dashed twin.
func headerAttacks(e *env, r *report) {
	twice := func(name string, vals ...string) http.Header { return http.Header{name: vals} }
	for _, s := range []shape{
		{name: "HTTP/1.1 X-Debug: 1 sent twice", client: e.http1, method: "GET", path: "/api/h1", header: twice("X-Debug", "1", "1"), want: []int{403}},
		{name: "HTTP/2 x-debug: 0 then x-debug: 1", client: e.http2, method: "GET", path: "/api/h2", header: twice("X-Debug", "0", "1"), want: []int{403}},
		{name: "HTTP/1.1 x_debug: 1 (underscore)", client: e.http1, method: "GET", path: "/api/h3", header: http.Header{"x_debug": {"1"}}, want: []int{400}},
		{name: "HTTP/2 x_debug: 1 (underscore)", client: e.http2, method: "GET", path: "/api/h4", header: http.Header{"x_debug": {"1"}}, want: []int{400, 0}},
		{name: "HTTP/2 X-Debug: 0 twice (allowed)", client: e.http2, method: "GET", path: "/api/h5", header: twice("X-Debug", "0", "0"), want: []int{200}, reaches: true},
	} {
		e.send(r, "header", s)
	}
}

// pathAttacks: spellings of a denied path. Envoy normalises before authorization; what it
// leaves (";" parameters, bytes that are not UTF-8) authorization refuses.
func pathAttacks(e *env, r *report) {
	denied := []int{403}
	for _, s := range []shape{
		{name: "%2e%2e to a denied path", client: e.http1, method: "GET", path: "/api/%2e%2e/admin/p1", want: denied, decided: true},
		{name: "%2E%2E to a denied path", client: e.http2, method: "GET", path: "/api/%2E%2E/admin/p2", want: denied},
		{name: "// to a denied path", client: e.http1, method: "GET", path: "//admin//p3", want: denied},
		{name: "/./ to a denied path", client: e.http2, method: "GET", path: "/./admin/p4", want: denied},
		{name: "another case of a denied path", client: e.http1, method: "GET", path: "/ADMIN/p5", want: denied},
		// Envoy's normalisation resolves "..;" as ".." (as Tomcat does): what it forwards and
		// what is decided agree; a direct Check with it is refused (checkAttacks).
		{name: "..; (Tomcat's ..) to a denied path", client: e.http1, method: "GET", path: "/api/..;/admin/p6", want: []int{400, 403}, decided: true},
		{name: "overlong UTF-8 dots to a denied path", client: e.http2, method: "GET", path: "/api/%c0%ae%c0%ae/admin/p7", want: []int{400}},
		{name: "%2f inside a segment to a denied path", client: e.http1, method: "GET", path: "/api/admin%2Fp8", want: []int{307, 403}},
	} {
		e.send(r, "path", s)
	}
	r.check("path", "the application saw none of the denied paths", "no request under /admin or /api/admin", func() (string, bool) {
		e.app.mu.Lock()
		defer e.app.mu.Unlock()
		var bad []string
		for _, s := range e.app.reqs {
			if strings.HasPrefix(strings.ToLower(s.path), "/admin") || strings.HasPrefix(strings.ToLower(s.path), "/api/admin") || strings.Contains(s.path, "..") {
				bad = append(bad, s.path)
			}
		}
		return fmt.Sprintf("%d requests: %v", len(bad), bad), len(bad) == 0
	})
}

// identityHeaderAttacks: a caller naming another identity in X-Forwarded-Client-Cert, or
// forging the decision id the application logs.
func identityHeaderAttacks(e *env, r *report) {
	r.check("identity", "forged X-Forwarded-Client-Cert and decision id", "the application sees only the real caller and a real decision id", func() (string, bool) {
		h := http.Header{
			"X-Forwarded-Client-Cert":  {"By=spiffe://attack.test/ns/demo/sa/backend;URI=spiffe://attack.test/ns/demo/sa/admin"},
			"X-Portcullis-Decision-Id": {"forged"},
		}
		code, body, err := e.do(e.http2, "GET", "/api/xfcc", h)
		got := e.app.got("/api/xfcc")
		if err != nil || code != 200 || len(got) != 1 {
			return status(code, body, err), false
		}
		xfcc, id := got[0].header.Values("X-Forwarded-Client-Cert"), got[0].header.Get("X-Portcullis-Decision-Id")
		observed := fmt.Sprintf("XFCC %q, decision id %q", xfcc, id)
		return observed, len(xfcc) == 1 && strings.Contains(xfcc[0], "URI="+frontendID.String()) && !strings.Contains(xfcc[0], "sa/admin") && len(id) == 26
	})
}

// jwtAttacks: tokens an attacker can make without the issuer's key, and a claim named like the
// nested path a policy tests.
func jwtAttacks(e *env, r *report) {
	t := e.t
	good := authztest.Claims(issuer, "alice", "backend")
	good["realm_access"] = map[string]any{"roles": []any{"admin"}}
	with := func(kv ...any) map[string]any {
		c := map[string]any{}
		for k, v := range good {
			c[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	now := time.Now()
	valid := e.jwtKey.Sign(t, good, nil)
	parts := strings.Split(valid, ".")
	other := authztest.NewKey(t, "ES256", "k1") // same kid, another key
	pubDER, err := x509.MarshalPKIXPublicKey(e.jwtKey.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, parts[2])
	for _, tc := range []struct{ name, token string }{
		{"alg none", authztest.Unsigned(t, good)},
		{"HS256 keyed with the issuer's public key", authztest.SignHMAC(t, pubDER, "k1", good)},
		{"expired", e.jwtKey.Sign(t, with("exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix()), nil)},
		{"not yet valid", e.jwtKey.Sign(t, with("nbf", now.Add(time.Hour).Unix()), nil)},
		{"another issuer", e.jwtKey.Sign(t, with("iss", "https://evil.test"), nil)},
		{"another audience", e.jwtKey.Sign(t, with("aud", "frontend"), nil)},
		{"no exp", e.jwtKey.Sign(t, with("exp", nil), nil)},
		{"payload changed after signing", parts[0] + "." + segment(t, with("sub", "mallory")) + "." + parts[2]},
		{"unknown kid", e.jwtKey.Sign(t, good, map[string]any{"kid": "nope"})},
		{"another key with the same kid", other.Sign(t, good, nil)},
		{"two parts", parts[0] + "." + parts[1]},
		{"five parts (JWE)", "a.b.c.d.e"},
	} {
		path := "/jwt/" + strings.ReplaceAll(tc.name, " ", "-")
		e.send(r, "jwt", shape{name: "token: " + tc.name, client: e.http2, method: "GET", path: path,
			header: http.Header{"Authorization": {"Bearer " + tc.token}}, want: []int{401}})
	}
	e.send(r, "jwt", shape{name: "a valid admin token (allowed)", client: e.http2, method: "GET", path: "/jwt/valid",
		header: http.Header{"Authorization": {"Bearer " + valid}}, want: []int{200}, reaches: true})
	// The issuer lets users add claims; mallory adds one named like the nested path.
	literal := e.jwtKey.Sign(t, with("sub", "mallory", "realm_access", map[string]any{"roles": []any{"viewer"}}, "realm_access.roles", []any{"admin"}), nil)
	e.send(r, "jwt", shape{name: `a claim literally named "realm_access.roles"`, client: e.http2, method: "GET", path: "/jwt/literal",
		header: http.Header{"Authorization": {"Bearer " + literal}}, want: []int{403}})
	viewer := e.jwtKey.Sign(t, with("sub", "mallory", "realm_access", map[string]any{"roles": []any{"viewer"}}), nil)
	e.send(r, "jwt", shape{name: "two Authorization headers, a valid token and another", client: e.http1, method: "GET", path: "/jwt/two",
		header: http.Header{"Authorization": {"Bearer " + valid, "Bearer " + viewer}}, want: []int{401}})
	e.secrets = append(e.secrets, strings.Split(literal, ".")[2], strings.Split(viewer, ".")[2])
}

// segment is a JWT segment: base64url JSON.
func segment(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
