package telemetry

import (
	"cmp"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// TraceViewer serves a small trace browser over Jaeger's query API: a search page (service and
// tag) and a page per trace with its span tree and every span's tags. Jaeger builds from the Go
// module carry no web UI assets, so this is how traces are read in the demo; the same API feeds
// Jaeger's own UI where it is deployed.
func TraceViewer(queryURL string) http.Handler {
	v := &traceViewer{query: strings.TrimSuffix(queryURL, "/"), client: &http.Client{Timeout: 10 * time.Second}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /traces", v.search)
	mux.HandleFunc("GET /traces/{id}", v.trace)
	return mux
}

type traceViewer struct {
	query  string
	client *http.Client
}

// JaegerTrace is a trace as Jaeger's query API (/api/traces) returns it: what the trace
// browser renders, and what tests read back.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace.
type JaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	StartTime     int64  `json:"startTime"` // µs since the epoch
	Duration      int64  `json:"duration"`  // µs
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// JaegerProcess names the service that reported spans.
type JaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

func (v *traceViewer) get(path string, out any) error {
	resp, err := v.client.Get(v.query + path)
	if err != nil {
		return fmt.Errorf("jaeger query API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaeger query API %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// row is one trace in the search results.
type row struct {
	ID, Root, Services, Decision, Start string
	Duration                            time.Duration
	Spans                               int
}

func (v *traceViewer) search(w http.ResponseWriter, r *http.Request) {
	service := cmp.Or(r.URL.Query().Get("service"), "portcullis-controlplane")
	tag := r.URL.Query().Get("tag") // key:value
	q := url.Values{"service": {service}, "limit": {"50"}, "lookback": {"1h"}}
	if k, val, ok := strings.Cut(tag, ":"); ok {
		b, err := json.Marshal(map[string]string{k: val})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q.Set("tags", string(b))
	}
	var services struct{ Data []string }
	var found struct{ Data []JaegerTrace }
	if err := v.get("/api/services", &services); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if err := v.get("/api/traces?"+q.Encode(), &found); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var rows []row
	for _, t := range found.Data {
		rows = append(rows, summarize(t))
	}
	slices.SortFunc(rows, func(a, b row) int { return strings.Compare(b.Start, a.Start) })
	render(w, searchPage, map[string]any{"Service": service, "Tag": tag, "Services": services.Data, "Rows": rows})
}

func summarize(t JaegerTrace) row {
	r := row{ID: t.TraceID, Spans: len(t.Spans)}
	var first, last int64
	svcs := map[string]bool{}
	for i, s := range t.Spans {
		svcs[t.Processes[s.ProcessID].ServiceName] = true
		if i == 0 || s.StartTime < first {
			first, r.Root = s.StartTime, t.Processes[s.ProcessID].ServiceName+": "+s.OperationName
		}
		last = max(last, s.StartTime+s.Duration)
		for _, tag := range s.Tags {
			if tag.Key == "authz.decision" || (tag.Key == "portcullis.decision.code" && r.Decision == "") {
				r.Decision = fmt.Sprint(tag.Value)
			}
		}
	}
	r.Duration = time.Duration(last-first) * time.Microsecond
	r.Start = time.UnixMicro(first).Format("15:04:05.000")
	names := make([]string, 0, len(svcs))
	for s := range svcs {
		names = append(names, s)
	}
	slices.Sort(names)
	r.Services = strings.Join(names, ", ")
	return r
}

// node is a span in the tree view.
type node struct {
	Depth            int
	Service, Name    string
	Offset, Duration time.Duration
	Tags             [][2]string
	Error            bool
}

func (v *traceViewer) trace(w http.ResponseWriter, r *http.Request) {
	var found struct{ Data []JaegerTrace }
	if err := v.get("/api/traces/"+url.PathEscape(r.PathValue("id")), &found); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if len(found.Data) == 0 {
		http.NotFound(w, r)
		return
	}
	t := found.Data[0]
	children := map[string][]JaegerSpan{}
	ids := map[string]bool{}
	var start int64
	for i, s := range t.Spans {
		ids[s.SpanID] = true
		if i == 0 || s.StartTime < start {
			start = s.StartTime
		}
	}
	for _, s := range t.Spans {
		parent := ""
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" && ids[ref.SpanID] {
				parent = ref.SpanID
			}
		}
		children[parent] = append(children[parent], s)
	}
	var nodes []node
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		list := children[parent]
		slices.SortFunc(list, func(a, b JaegerSpan) int { return cmp.Compare(a.StartTime, b.StartTime) })
		for _, s := range list {
			n := node{Depth: depth, Service: t.Processes[s.ProcessID].ServiceName, Name: s.OperationName,
				Offset: time.Duration(s.StartTime-start) * time.Microsecond, Duration: time.Duration(s.Duration) * time.Microsecond}
			for _, tag := range s.Tags {
				val := fmt.Sprint(tag.Value)
				n.Tags = append(n.Tags, [2]string{tag.Key, val})
				if (tag.Key == "error" && val == "true") || tag.Key == "otel.status_code" && val == "ERROR" {
					n.Error = true
				}
			}
			nodes = append(nodes, n)
			if depth < 64 {
				walk(s.SpanID, depth+1)
			}
		}
	}
	walk("", 0)
	render(w, tracePage, map[string]any{"ID": t.TraceID, "Nodes": nodes})
}

func render(w http.ResponseWriter, t *template.Template, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := t.Execute(w, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

const pageStyle = `<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left;border-bottom:1px solid #ddd}
.err{color:#b00}.tags{font-size:.85em;color:#444}code{font-size:.9em}</style>`

var searchPage = template.Must(template.New("search").Parse(`<!doctype html><title>Portcullis traces</title>` + pageStyle + `
<h1>Traces</h1>
<form>service <select name="service">{{range .Services}}<option{{if eq . $.Service}} selected{{end}}>{{.}}</option>{{end}}</select>
tag <input name="tag" value="{{.Tag}}" placeholder="authz.decision:DENY" size="32"> <button>search</button></form>
<p>Examples: <a href="?service=portcullis-controlplane&amp;tag=authz.decision:DENY">denied requests</a> ·
<a href="?service=backend">requests to the backend</a></p>
<table><tr><th>start</th><th>root span</th><th>services</th><th>spans</th><th>duration</th><th>decision</th></tr>
{{range .Rows}}<tr><td>{{.Start}}</td><td><a href="traces/{{.ID}}">{{.Root}}</a></td><td>{{.Services}}</td><td>{{.Spans}}</td><td>{{.Duration}}</td><td>{{.Decision}}</td></tr>
{{else}}<tr><td colspan="6">no traces</td></tr>{{end}}</table>`))

var tracePage = template.Must(template.New("trace").Parse(`<!doctype html><title>Trace {{.ID}}</title>` + pageStyle + `
<p><a href="../traces">← traces</a></p><h1>Trace <code>{{.ID}}</code></h1>
<table><tr><th>span</th><th>service</th><th>start</th><th>duration</th></tr>
{{range .Nodes}}<tr{{if .Error}} class="err"{{end}}><td style="padding-left:{{.Depth}}.5em"><details><summary>{{.Name}}</summary>
<div class="tags">{{range .Tags}}<div><b>{{index . 0}}</b> = {{index . 1}}</div>{{end}}</div></details></td>
<td>{{.Service}}</td><td>+{{.Offset}}</td><td>{{.Duration}}</td></tr>{{end}}</table>`))

// JaegerConfig is a Jaeger v2 configuration: OTLP gRPC in, memory storage, the query API,
// everything on the given loopback addresses and nothing else listening.
func JaegerConfig(otlpAddr, queryAddr, queryGRPCAddr string) string {
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
extensions:
  jaeger_query:
    storage: {traces: memory}
    http: {endpoint: %q}
    grpc: {endpoint: %q}
  jaeger_storage:
    backends:
      memory: {memory: {max_traces: 100000}}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q}
processors:
  batch: {timeout: 200ms}
exporters:
  jaeger_storage_exporter: {trace_storage: memory}
`, queryAddr, queryGRPCAddr, otlpAddr)
}
