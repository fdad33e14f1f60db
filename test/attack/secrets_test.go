package attack

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// secretAttacks look for what must never be written down — tokens, private keys, query strings
// and cookies that carry credentials — in every log and on every debug page, after everything
// above sent them.
func secretAttacks(e *env, r *report) {
	const query, cookie = "qs-secret-5f1e2d", "cookie-secret-9a8b7c"
	e.secrets = append(e.secrets, query, cookie)
	if code, body, err := e.do(e.http2, "GET", "/api/secret?access_token="+query, http.Header{"Cookie": {"session=" + cookie}}); err != nil || code != 200 {
		e.t.Logf("request carrying secrets: %s", status(code, body, err))
	}
	if _, ok := e.decision("/api/secret"); !ok {
		e.t.Log("no decision for the request carrying secrets")
	}
	sources := map[string]func() (string, error){
		"the decision log": func() (string, error) {
			b, err := os.ReadFile(e.decisionLog)
			return string(b), err
		},
	}
	for _, p := range append([]*procLog{{"control plane", e.c.CP.Log}}, e.procLogs()...) {
		sources[p.name+" log"] = func() (string, error) { return p.log(), nil }
	}
	for _, path := range []string{"/debug/authz", "/debug/mesh", "/debug/proxies", "/debug/proxies/config?node=backend-1.demo", "/metrics"} {
		sources["control plane "+path] = get("http://" + e.c.CPAdmin + path)
	}
	for _, a := range e.agents {
		sources[a.P.Name+" /metrics"] = get("http://" + a.Admin + "/metrics")
	}
	// The join tokens the agents used.
	tokens, _ := filepath.Glob(filepath.Join(e.c.Work, "*.token"))
	for _, f := range tokens {
		if b, err := os.ReadFile(f); err == nil {
			tok := strings.TrimSpace(string(b))
			e.secrets = append(e.secrets, tok[strings.LastIndex(tok, ".")+1:])
		}
	}
	markers := append([]string{"PRIVATE KEY"}, e.secrets...)
	for _, name := range slices.Sorted(maps.Keys(sources)) {
		read := sources[name]
		r.check("secrets", "a secret in "+name, fmt.Sprintf("none of %d secrets", len(markers)), func() (string, bool) {
			text, err := read()
			if err != nil {
				return err.Error(), false
			}
			for _, m := range markers {
				if strings.Contains(text, m) {
					return fmt.Sprintf("found %.12q… in %d bytes", m, len(text)), false
				}
			}
			return fmt.Sprintf("none in %d bytes", len(text)), len(text) > 0
		})
	}
}

type procLog struct {
	name string
	log  func() string
}

func (e *env) procLogs() []*procLog {
	var out []*procLog
	for i, p := range e.logs {
		out = append(out, &procLog{fmt.Sprintf("%s (%d)", p.Name, i), p.Log})
	}
	return out
}

func get(url string) func() (string, error) {
	return func() (string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return string(b), err
	}
}
