package traceview

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// scanDepth is how many traces one Jaeger query returns at most; a page that needs more (its
// filters are applied here) continues where the scan stopped, through the older-page link.
const scanDepth = 500

// Handler serves the trace browser over the Jaeger query API at queryURL: GET /traces (the
// list) and GET /traces/{id} (one trace).
func Handler(queryURL string) http.Handler {
	v := &viewer{jaeger: NewClient(queryURL), now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /traces", v.list)
	mux.HandleFunc("GET /traces/{id}", v.trace)
	return mux
}

type viewer struct {
	jaeger *Client
	now    func() time.Time
}

// listPage is what the list template renders.
type listPage struct {
	F         Filter
	Error     string
	Requests  []Request
	Control   []controlRow
	Services  []string // services with proxies, for the service filter
	Decisions []string
	Scanned   int
	From, To  time.Time
	Older     template.URL // query string of the next (older) page; "" when this is the last
	Newest    template.URL // query string of the first page
}

func (v *viewer) list(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query(), v.now())
	p := listPage{F: f, Decisions: decisions}
	if err != nil {
		p.Error = "malformed filter: " + err.Error()
		render(w, http.StatusBadRequest, listTemplate, &p)
		return
	}
	p.From, p.To, p.Newest = v.now().Add(-f.Since), f.Before, template.URL(f.query())
	proxies, control, err := v.services(r.Context())
	if err != nil {
		p.Error = err.Error()
		render(w, http.StatusBadGateway, listTemplate, &p)
		return
	}
	p.Services = proxies
	var queries []Query
	base := Query{Start: p.From, End: f.Before.Add(-time.Microsecond), Limit: scanDepth}
	if f.View == viewRequests {
		if f.Service != "" && !slices.Contains(proxies, f.Service) {
			p.Error = fmt.Sprintf("service=%q: no proxy of that service has reported spans (known: %s)", f.Service, strings.Join(proxies, ", "))
			render(w, http.StatusBadRequest, listTemplate, &p)
			return
		}
		for _, s := range proxies {
			if f.Service == "" || s == f.Service {
				q := base
				q.Service, q.Tags = s, f.jaegerTags()
				queries = append(queries, q)
			}
		}
	} else {
		for svc, ops := range control {
			for _, op := range ops {
				if f.Operation == "" || op == f.Operation {
					q := base
					q.Service, q.Operation, q.Tags = svc, op, f.Tag
					queries = append(queries, q)
				}
			}
		}
	}
	traces, cutoff, err := v.scan(r.Context(), queries)
	if err != nil {
		p.Error = err.Error()
		render(w, http.StatusBadGateway, listTemplate, &p)
		return
	}
	p.Scanned = len(traces)
	var starts []time.Time
	for i := range traces {
		t := &traces[i]
		if IsRequest(t) != (f.View == viewRequests) {
			continue
		}
		if f.View == viewRequests {
			if req := Summarize(t); f.Match(&req) && !req.Start.Before(cutoff) {
				p.Requests = append(p.Requests, req)
			}
			continue
		}
		if row := summarizeControl(t); !row.Start.Before(cutoff) {
			p.Control = append(p.Control, row)
		}
	}
	slices.SortFunc(p.Requests, func(a, b Request) int { return b.Start.Compare(a.Start) })
	slices.SortFunc(p.Control, func(a, b controlRow) int { return b.Start.Compare(a.Start) })
	for _, r := range p.Requests {
		starts = append(starts, r.Start)
	}
	for _, r := range p.Control {
		starts = append(starts, r.Start)
	}
	// The older page starts below the last row shown, or where a truncated scan stopped.
	next := time.Time{}
	if len(starts) > f.Limit {
		next = starts[f.Limit-1]
		p.Requests, p.Control = p.Requests[:min(len(p.Requests), f.Limit)], p.Control[:min(len(p.Control), f.Limit)]
	} else if !cutoff.IsZero() {
		next = cutoff
	}
	if !next.IsZero() {
		p.Older = template.URL(f.query("before", strconv.FormatInt(next.UnixMicro(), 10)))
	}
	render(w, http.StatusOK, listTemplate, &p)
}

// services sorts Jaeger's services: those with proxy spans (a request's hops) and, for the
// others, their span names outside authorization (the control plane's own work).
func (v *viewer) services(ctx context.Context) (proxies []string, control map[string][]string, err error) {
	all, err := v.jaeger.Services(ctx)
	if err != nil {
		return nil, nil, err
	}
	control = map[string][]string{}
	for _, s := range all {
		ops, err := v.jaeger.Operations(ctx, s)
		if err != nil {
			return nil, nil, err
		}
		if slices.ContainsFunc(ops, func(op string) bool {
			return strings.HasPrefix(op, "inbound ") || strings.HasPrefix(op, "outbound ")
		}) {
			proxies = append(proxies, s)
			continue
		}
		for _, op := range ops {
			if !strings.HasPrefix(op, "authz.") {
				control[s] = append(control[s], op)
			}
		}
	}
	slices.Sort(proxies)
	return proxies, control, nil
}

// scan runs the queries and returns the traces they found, each once. When a query returned as
// many traces as it may, older ones exist that it did not return: cutoff is the oldest start it
// returned, below which the scan is incomplete (zero when every query was complete).
func (v *viewer) scan(ctx context.Context, queries []Query) ([]Trace, time.Time, error) {
	var out []Trace
	var cutoff time.Time
	seen := map[string]bool{}
	for _, q := range queries {
		found, err := v.jaeger.Find(ctx, q)
		if err != nil {
			return nil, time.Time{}, err
		}
		var oldest time.Time
		for _, t := range found {
			if start := traceStart(&t); oldest.IsZero() || start.Before(oldest) {
				oldest = start
			}
			if !seen[t.TraceID] {
				seen[t.TraceID] = true
				out = append(out, t)
			}
		}
		if len(found) >= q.Limit && oldest.After(cutoff) {
			cutoff = oldest
		}
	}
	return out, cutoff, nil
}

func traceStart(t *Trace) time.Time {
	var first int64
	for i, s := range t.Spans {
		if i == 0 || s.StartTime < first {
			first = s.StartTime
		}
	}
	return time.UnixMicro(first)
}

// controlRow is one of the control plane's own traces.
type controlRow struct {
	TraceID, Root, Services, Error string
	Start                          time.Time
	Duration                       time.Duration
	Spans                          int
}

func summarizeControl(t *Trace) controlRow {
	r := controlRow{TraceID: t.TraceID, Spans: len(t.Spans), Start: traceStart(t)}
	var last int64
	var svcs []string
	for i := range t.Spans {
		s := &t.Spans[i]
		last = max(last, s.StartTime+s.Duration)
		if s.Parent() == "" || r.Root == "" {
			r.Root = s.OperationName
		}
		if svc := t.Processes[s.ProcessID].ServiceName; !slices.Contains(svcs, svc) {
			svcs = append(svcs, svc)
		}
		if s.Tag("otel.status_code") == "ERROR" {
			r.Error = cmp.Or(r.Error, s.Tag("otel.status_description"), "error")
		}
	}
	r.Services = strings.Join(svcs, ", ")
	r.Duration = time.Duration(last-r.Start.UnixMicro()) * time.Microsecond
	return r
}
