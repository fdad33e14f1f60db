package traceview

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
	"time"
)

func render(w http.ResponseWriter, status int, t *template.Template, data any) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		http.Error(w, "traceview: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

var funcs = template.FuncMap{
	"clock":   func(t time.Time) string { return t.Format("15:04:05.000") },
	"stamp":   func(t time.Time) string { return t.Format("2006-01-02 15:04:05") },
	"ms":      func(d time.Duration) string { return d.Round(time.Microsecond).String() },
	"join":    strings.Join,
	"arrows":  func(s []string) string { return strings.Join(s, " → ") },
	"decided": func(r Request) bool { return r.Decision != "" },
	"lower":   strings.ToLower,
	"indent":  func(depth int) float64 { return 0.3 + 1.2*float64(depth) },
}

const style = `<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}td,th{padding:.25em .5em;text-align:left;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{background:#f6f6f6;font-weight:600}code,.mono{font-family:ui-monospace,monospace;font-size:.9em}
.error{background:#fde8e8;border:1px solid #e0a0a0;padding:.6em;margin:.6em 0}
.allow{color:#1a7f37;font-weight:600}.deny,.rate_limited,.authz_unreachable{color:#b42318;font-weight:600}
.muted{color:#666;font-size:.85em}form label{margin-right:.8em}nav a{margin-right:1em}
.decision{border:2px solid #b42318;padding:.6em 1em;margin:.8em 0;display:inline-block}.decision.allowed{border-color:#1a7f37}
.decision dt{float:left;clear:left;width:7em;color:#555}.decision dd{margin:0 0 .15em 7.5em}
.axis,.lane{position:relative;height:1.1em}.axis span{position:absolute;font-size:.75em;color:#666;transform:translateX(-50%)}
.lane div{position:absolute;top:.2em;height:.8em;border-radius:2px;min-width:2px}
td.name{white-space:nowrap}td.bars{width:55%}.kv{font-size:.85em;color:#333}.kv b{font-weight:600}
tr.check td{background:#fff7e6}tr.err .name{color:#b42318}
</style>`

var listTemplate = template.Must(template.New("list").Funcs(funcs).Parse(`<!doctype html><title>Portcullis traces</title>` + style + `
<nav><a href="?">requests</a><a href="?view=control">control plane</a><span class="muted">Jaeger's UI has every trace too</span></nav>
<h1>{{if eq .F.View "control"}}Control plane traces{{else}}Requests{{end}}</h1>
<form method="get">{{if eq .F.View "control"}}<input type="hidden" name="view" value="control">
<label>span <input name="op" value="{{.F.Operation}}" placeholder="xds.reconcile" size="14"></label>
{{else}}<label>decision <select name="decision"><option value="">any</option>{{range $d := .Decisions}}<option{{if eq $d $.F.Decision}} selected{{end}}>{{$d}}</option>{{end}}</select></label>
<label>code <input name="code" value="{{if .F.Code}}{{.F.Code}}{{end}}" placeholder="403" size="4"></label>
<label>policy <input name="policy" value="{{.F.Policy}}" placeholder="demo/backend-deny-debug" size="24"></label>
<label>service <select name="service"><option value="">any</option>{{range .Services}}<option{{if eq . $.F.Service}} selected{{end}}>{{.}}</option>{{end}}</select></label>
<label>path <input name="path" value="{{.F.Path}}" placeholder="/api/*" size="12"></label>
<label>decision id <input name="decision_id" value="{{.F.DecisionID}}" size="28"></label>
{{end}}<label>since <input name="since" value="{{.F.Since}}" size="5"></label>
<button>search</button> <a href="?{{if eq .F.View "control"}}view=control{{end}}">clear</a></form>
{{if .Error}}<div class="error" id="error">{{.Error}}</div>{{end}}
<p class="muted">{{if eq .F.View "control"}}{{len .Control}}{{else}}{{len .Requests}}{{end}} shown, newest first, of {{.Scanned}} traces read from Jaeger between {{stamp .From}} and {{stamp .To}}.
{{if .Older}}<a id="older" href="?{{.Older}}">older →</a>{{else}}No older ones match.{{end}}
{{if ne .Newest ""}} <a href="?{{.Newest}}">newest</a>{{end}}</p>
{{if eq .F.View "control"}}<table><tr><th>start</th><th>span</th><th>services</th><th>spans</th><th>duration</th><th>error</th></tr>
{{range .Control}}<tr><td class="mono">{{clock .Start}}</td><td><a href="traces/{{.TraceID}}">{{.Root}}</a></td><td>{{.Services}}</td><td>{{.Spans}}</td><td>{{ms .Duration}}</td><td class="deny">{{.Error}}</td></tr>
{{else}}<tr><td colspan="6">no traces</td></tr>{{end}}</table>
{{else}}<table id="requests"><tr><th>start</th><th>request</th><th>status</th><th>decision</th><th>code</th><th>policy</th><th>rule</th><th>reason</th><th>services</th><th>duration</th></tr>
{{range .Requests}}<tr data-decision-id="{{.ID}}"><td class="mono"><a href="traces/{{.TraceID}}">{{clock .Start}}</a></td>
<td class="mono"><a href="traces/{{.TraceID}}">{{.Method}} {{.Path}}</a></td><td>{{if .Status}}{{.Status}}{{end}}</td>
<td class="{{lower .Decision}}">{{.Decision}}</td><td>{{if .Code}}{{.Code}}{{end}} <span class="muted">{{.AuthzCode}}</span></td>
<td>{{.Policy}}</td><td>{{.Rule}}</td><td>{{.Reason}}</td><td>{{arrows .Services}}</td><td>{{ms .Duration}}</td></tr>
{{else}}<tr><td colspan="10">no requests match</td></tr>{{end}}</table>{{end}}`))

var traceTemplate = template.Must(template.New("trace").Funcs(funcs).Parse(`<!doctype html><title>Trace {{.ID}}</title>` + style + `
<nav><a href="../traces">← requests</a><a href="../traces?view=control">control plane</a></nav>
<h1>Trace <code>{{.ID}}</code></h1>
{{with .Request}}<p class="mono">{{.Method}} {{.Path}} → {{.Status}} · {{arrows .Services}} · {{ms .Duration}}</p>
{{if decided .}}<dl class="decision{{if eq .Decision "ALLOW"}} allowed{{end}}" id="decision">
<dt>decision</dt><dd class="{{lower .Decision}}">{{.Decision}}</dd>
<dt>code</dt><dd>{{if .Code}}{{.Code}}{{end}} {{.AuthzCode}}</dd>
{{if .Policy}}<dt>policy</dt><dd id="policy">{{.Policy}}</dd>{{end}}
{{if .Rule}}<dt>rule</dt><dd>{{.Rule}}</dd>{{end}}
{{if .Reason}}<dt>reason</dt><dd id="reason">{{.Reason}}</dd>{{end}}
{{if .ID}}<dt>decision id</dt><dd class="mono">{{.ID}}</dd>{{end}}
{{if .Source}}<dt>caller</dt><dd class="mono">{{.Source}}</dd>{{end}}
{{if .Destination}}<dt>callee</dt><dd class="mono">{{.Destination}}</dd>{{end}}
</dl>{{else}}<p class="muted">No proxy refused this request and no authorization decision is in the trace.</p>{{end}}{{end}}
<table id="timeline"><tr><th>span</th><th>service</th><th>start</th><th>duration</th><th><div class="axis">{{range .Ticks}}<span style="left:{{.Left}}%">{{.Label}}</span>{{end}}</div></th></tr>
{{range .Bars}}<tr class="{{if .Check}}check{{end}}{{if .Error}} err{{end}}"><td class="name" style="padding-left:{{indent .Depth}}em">{{.Name}}
<div class="kv">{{range .Key}}<div><b>{{index . 0}}</b> = {{index . 1}}</div>{{end}}{{range .Events}}<div>event {{.}}</div>{{end}}</div>
{{if .Other}}<details class="kv"><summary>{{len .Other}} more tags</summary>{{range .Other}}<div><b>{{index . 0}}</b> = {{index . 1}}</div>{{end}}</details>{{end}}</td>
<td>{{.Service}}</td><td class="mono">+{{ms .Offset}}</td><td class="mono">{{ms .Length}}</td>
<td class="bars"><div class="lane"><div style="left:{{.Left}}%;width:{{.Width}}%;background:{{.Color}}" title="{{.Name}} {{ms .Length}}"></div></div></td></tr>{{end}}
</table>`))
