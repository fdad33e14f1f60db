package ratelimit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/tracetest"
)

// apiKeyPolicies: the frontend's requests reach the api's /export/* with a key holding the
// export scope, and /limited/* with any verified key, at most 3 per key identity.
const apiKeyPolicies = `apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: batch-clients, namespace: shop}
spec:
  selector: {service: api}
  action: ALLOW
  rules:
    - name: exporters
      from:
        principals: ["spiffe://limits.test/ns/shop/sa/frontend"]
        apiKey: {providers: [batch], attributes: [{claim: scopes, contains: export}]}
      to: {paths: ["/export/*"]}
    - name: any-key
      from:
        principals: ["spiffe://limits.test/ns/shop/sa/frontend"]
        apiKey: {}
      to: {paths: ["/limited/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: per-client, namespace: shop}
spec:
  selector: {service: api}
  limits:
    - name: per-api-key
      pathPrefix: /limited
      bucket: {maxTokens: 3, fillInterval: 1h}
      by: {apiKey: true}
`

// TestAPIKeysThroughEnvoy: keys made with `portcullis apikey`, presented to a real Envoy whose
// ext_authz is the separate authorization service: a valid key allowed, a wrong one, a revoked
// one and an expired one refused with 401, a policy on the keys' attributes, a limit per key
// identity; and the keys appear nowhere the mesh writes: decision log, process logs, spans,
// debug pages, metrics.
func TestAPIKeysThroughEnvoy(t *testing.T) {
	c := meshtest.New(t, trustDomain)
	collector := tracetest.StartReceiver(t)
	apiApp, apiPort := startApp(t)
	_, frontendPort := startApp(t)
	c.Write("mesh.yaml", meshDoc+fmt.Sprintf("  tracing: {enabled: true, collector: %q, samplingPercent: 100}\n", collector.Endpoint()))
	c.Write("services.yaml", fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: frontend, namespace: shop}
spec: {ports: [{name: http, port: %d}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{name: http, port: %d}]}
`, frontendPort, apiPort))
	c.Write("policies.yaml", apiKeyPolicies)

	// The keys, made as an operator makes them: stdout is the key and nothing else.
	file := filepath.Join(c.ConfigDir, "apikeys.yaml")
	apikey := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(c.Bin, append(append([]string{"apikey"}, args...), "--file", file, "--provider", "batch", "--namespace", namespace)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("portcullis apikey %v: %v", args, err)
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	expired := apikey("create", "--identity", "batch-exporter", "--attr", "scopes=export", "--id", "exporter-1")
	exporter := apikey("rotate", "--id", "exporter-1", "--new-id", "exporter-2", "--overlap", "0s") // exporter-1 ends now
	reporter := apikey("create", "--identity", "reporter", "--attr", "scopes=read", "--id", "reporter-1")
	leaked := apikey("create", "--identity", "batch-exporter", "--attr", "scopes=export", "--id", "leaked-1")
	if out := apikey("revoke", "--id", "leaked-1"); out != "" {
		t.Fatalf("revoke printed %q", out)
	}
	wrong := "pck_exporter-2_" + strings.Repeat("A", 43)
	keys := map[string]string{"exporter": exporter, "expired": expired, "reporter": reporter, "leaked": leaked, "wrong": wrong}
	for name, k := range keys {
		if !strings.HasPrefix(k, "pck_") || strings.Contains(k, "\n") || len(k) < 50 {
			t.Fatalf("%s key %q", name, k)
		}
	}

	c.StartControlPlane()
	authzAgent := c.StartAgent("authz-agent", "portcullis-system", "authz")
	authzAgent.WaitReady(t)
	decisions := filepath.Join(c.Work, "decisions.log")
	authz, authzAdmin := c.StartAuthz(authzAgent, "--decision-log", decisions, "--otlp-endpoint", collector.Endpoint())
	apiOut := proctest.FreePort(t)
	api := c.StartProxy("api-1", namespace, "api", apiPort, nil)
	frontend := c.StartProxy("frontend-1", namespace, "frontend", frontendPort, []string{"api=" + strconv.Itoa(apiOut)})
	api.WaitReady(t)
	frontend.WaitReady(t)
	url := func(path string) string { return "http://127.0.0.1:" + strconv.Itoa(apiOut) + path }
	withKey := func(k string) http.Header { return http.Header{"X-Api-Key": {k}} }
	proctest.Eventually(t, 30*time.Second, func() error {
		if code := send(t, http.MethodGet, url("/export/ready"), withKey(exporter)).StatusCode; code != 200 {
			return fmt.Errorf("%d", code)
		}
		return nil
	}, "the exporter's key is accepted")

	t.Run("keys decide", func(t *testing.T) {
		for _, tc := range []struct {
			name, key, path string
			want            int
		}{
			{"valid key with the export scope", exporter, "/export/run", 200},
			{"wrong secret", wrong, "/export/run", 401},
			{"revoked", leaked, "/export/run", 401},
			{"expired by a rotation without overlap", expired, "/export/run", 401},
			{"valid key without the export scope", reporter, "/export/run", 403},
			{"no key", "", "/export/run", 403},
			{"malformed", "hunter2", "/export/run", 401},
		} {
			var h http.Header
			if tc.key != "" {
				h = withKey(tc.key)
			}
			resp := send(t, http.MethodGet, url(tc.path), h)
			if resp.StatusCode != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
			}
			if resp.StatusCode == 401 && resp.Header.Get("Www-Authenticate") == "" {
				t.Errorf("%s: 401 without a challenge", tc.name)
			}
		}
		if n := apiApp.count("GET /export/run"); n != 1 {
			t.Errorf("the application served /export/run %d times, want once (the valid key)", n)
		}
	})

	t.Run("a limit per key identity", func(t *testing.T) {
		if got := fmt.Sprint(statuses(t, 4, url("/limited/x"), withKey(reporter))); got != "[200 200 200 429]" {
			t.Errorf("reporter: %s, want three then 429", got)
		}
		// A refused key spends nobody's bucket; a header naming the reporter's bucket does not
		// select it: the exporter's request counts in the exporter's own.
		if code := send(t, http.MethodGet, url("/limited/x"), withKey(wrong)).StatusCode; code != 401 {
			t.Errorf("wrong key: %d", code)
		}
		forged := http.Header{"X-Api-Key": {exporter}, "X-Portcullis-Verified": {`apikey:"shop/batch"reporter`}, "X-Forwarded-For": {"203.0.113.1"}}
		if code := send(t, http.MethodGet, url("/limited/x"), forged).StatusCode; code != 200 {
			t.Errorf("exporter with a forged header: %d, want 200 from its own bucket", code)
		}
		if got := fmt.Sprint(statuses(t, 3, url("/limited/x"), withKey(exporter))); got != "[200 200 429]" {
			t.Errorf("exporter: %s, want the rest of its own three then 429", got)
		}
	})

	// The decision log says what happened, by key id.
	var records []struct {
		Code   string `json:"code"`
		APIKey *struct {
			ID, Identity, Error string
		} `json:"api_key"`
	}
	proctest.Eventually(t, 10*time.Second, func() error {
		records = records[:0]
		f, err := os.Open(decisions)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r struct {
				Code   string `json:"code"`
				APIKey *struct {
					ID, Identity, Error string
				} `json:"api_key"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return err
			}
			records = append(records, r)
		}
		for _, want := range []string{"revoked leaked-1 revoked", "api_key_invalid exporter-1 expired", "api_key_invalid exporter-2 wrong_secret", "allowed exporter-2 "} {
			found := false
			for _, r := range records {
				if r.APIKey != nil && fmt.Sprintf("%s %s %s", r.Code, r.APIKey.ID, r.APIKey.Error) == want {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no record %q among %d", want, len(records))
			}
		}
		return nil
	}, "the decision log records each refusal's code and reason")

	// The authorization service's span names the key by id.
	var spans []tracetest.Span
	proctest.Eventually(t, 20*time.Second, func() error {
		spans = collector.Spans(t)
		for _, s := range spans {
			if s.Name == "authz.apikey.verify" && s.Attrs["authz.apikey.id"] == "leaked-1" && s.Attrs["authz.apikey.error"] == "revoked" {
				return nil
			}
		}
		return fmt.Errorf("no authz.apikey.verify span for leaked-1 among %d spans", len(spans))
	}, "the key verification span")

	t.Run("the keys appear nowhere", func(t *testing.T) {
		dlog, err := os.ReadFile(decisions)
		if err != nil {
			t.Fatal(err)
		}
		spanText, _ := json.Marshal(spans)
		where := map[string]string{
			"decision log":              string(dlog),
			"authz log":                 authz.Log(),
			"control plane log":         c.CP.Log(),
			"api agent log":             api.P.Log(),
			"frontend agent log":        frontend.P.Log(),
			"spans":                     string(spanText),
			"authz /debug/authz":        get(t, "http://"+authzAdmin+"/debug/authz"),
			"authz /debug/mesh":         get(t, "http://"+authzAdmin+"/debug/mesh"),
			"authz /metrics":            get(t, "http://"+authzAdmin+"/metrics"),
			"control plane /debug/mesh": get(t, "http://"+c.CPAdmin+"/debug/mesh"),
			"api agent /metrics":        get(t, "http://"+api.Admin+"/metrics"),
		}
		if !strings.Contains(where["authz /debug/authz"], "shop/batch") {
			t.Errorf("/debug/authz does not list the provider:\n%s", where["authz /debug/authz"])
		}
		for name, k := range keys {
			secret := k[len(k)-43:]
			for place, text := range where {
				if strings.Contains(text, k) || strings.Contains(text, secret) {
					t.Errorf("the %s key appears in the %s", name, place)
				}
			}
		}
	})
}
