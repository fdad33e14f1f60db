package tracetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis/portcullis/telemetry/traceview"
	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/proctest"
)

// JaegerVersion is the Jaeger release `make jaeger` builds.
const JaegerVersion = "v1.76.0"

// Jaeger is a running Jaeger v2 with in-memory storage on loopback.
type Jaeger struct {
	OTLP     string // OTLP gRPC host:port
	QueryURL string // http://host:port of the query API (and UI)
	// Client reaches QueryURL; http.DefaultClient unless set (a Jaeger in a cluster is reached
	// through the cluster's network namespace).
	Client *http.Client
}

// JaegerBinary returns the cached Jaeger binary, or "" when it has not been built.
func JaegerBinary() string {
	root, err := envoytest.RepoRoot()
	if err != nil {
		return ""
	}
	p := filepath.Join(root, ".cache", "bin", "jaeger-"+JaegerVersion)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// JaegerUI returns the cached build of the Jaeger UI (make jaeger), or "" when it has not been
// built.
func JaegerUI() string {
	root, err := envoytest.RepoRoot()
	if err != nil {
		return ""
	}
	p := filepath.Join(root, ".cache", "jaeger-ui-"+JaegerVersion)
	if _, err := os.Stat(filepath.Join(p, "index.html")); err != nil {
		return ""
	}
	return p
}

// StartJaeger runs the cached Jaeger (serving the cached UI when built) until the test ends, or
// returns nil when it is not built.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := JaegerBinary()
	if bin == "" {
		t.Log("Jaeger not built (make jaeger): collecting spans in-process")
		return nil
	}
	j := &Jaeger{OTLP: loopback(t), QueryURL: "http://" + loopback(t)}
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(traceview.JaegerConfig(j.OTLP, j.QueryURL[len("http://"):], loopback(t), JaegerUI())), 0o600); err != nil {
		t.Fatal(err)
	}
	proctest.Start(t, "jaeger", bin, "--config", cfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(j.QueryURL + "/api/services")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger not answering: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Endpoint is where to export.
func (j *Jaeger) Endpoint() string { return j.OTLP }

// Spans returns every span of every service Jaeger knows, through its HTTP API.
func (j *Jaeger) Spans(t testing.TB) []Span {
	t.Helper()
	var services struct{ Data []string }
	getJSON(t, j.Client, j.QueryURL+"/api/services", &services)
	seen := map[string]bool{}
	var out []Span
	for _, svc := range services.Data {
		var traces struct {
			Data []traceview.Trace `json:"data"`
		}
		getJSON(t, j.Client, j.QueryURL+"/api/traces?limit=1000&service="+svc, &traces)
		for _, tr := range traces.Data {
			for _, s := range tr.Spans {
				if seen[s.SpanID] {
					continue
				}
				seen[s.SpanID] = true
				sp := Span{TraceID: tr.TraceID, SpanID: s.SpanID, Name: s.OperationName, Service: tr.Processes[s.ProcessID].ServiceName, Attrs: map[string]string{}}
				for _, r := range s.References {
					if r.RefType == "CHILD_OF" {
						sp.ParentID = r.SpanID
					}
				}
				for _, tag := range s.Tags {
					sp.Attrs[tag.Key] = fmt.Sprint(tag.Value)
				}
				out = append(out, sp)
			}
		}
	}
	return out
}

func getJSON(t testing.TB, client *http.Client, url string, v any) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

func loopback(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
}
