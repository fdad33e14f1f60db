package traceview

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strings"
	"time"
)

// bar is a span on the trace page's timeline.
type bar struct {
	Depth          int
	Service, Name  string
	Offset, Length time.Duration
	Left, Width    float64 // percent of the trace's duration
	Color          string
	Key            [][2]string // the tags that explain the request, shown without a click
	Other          [][2]string // every other tag, behind a click
	Events         []string
	Error, Check   bool
}

// tracePage is what the trace template renders.
type tracePage struct {
	ID       string
	Request  *Request // nil for the control plane's own traces
	Bars     []bar
	Duration time.Duration
	Ticks    []tick
}

type tick struct {
	Left  float64
	Label string
}

// keyTags are shown on each span without a click: what a request was and how it was decided.
var keyTags = []string{
	tagMethod, tagURL, tagStatus, tagFlags, tagDecisionID, tagCode, tagPolicy, tagRule, tagSource, tagDest,
	"authz.decision", "authz.code", "authz.policy", "authz.rule", "authz.reason", "authz.decision_id", "authz.principal",
	"authz.jwt.present", "authz.jwt.issuer", "authz.jwt.error", "ext_authz_status", "error",
}

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f"}

func (v *viewer) trace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, err := v.jaeger.Get(r.Context(), id)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	case t == nil:
		http.Error(w, fmt.Sprintf("trace %s: not in Jaeger (traces are kept in memory, the newest 100,000)", id), http.StatusNotFound)
		return
	}
	render(w, http.StatusOK, traceTemplate, timeline(t))
}

// timeline lays a trace's spans out as a tree on a time axis, as Jaeger's UI does.
func timeline(t *Trace) *tracePage {
	p := &tracePage{ID: t.TraceID}
	if IsRequest(t) {
		req := Summarize(t)
		p.Request = &req
	}
	start, end := int64(0), int64(0)
	ids := map[string]bool{}
	for i, s := range t.Spans {
		ids[s.SpanID] = true
		if i == 0 || s.StartTime < start {
			start = s.StartTime
		}
		end = max(end, s.StartTime+s.Duration)
	}
	total := max(end-start, 1)
	p.Duration = time.Duration(total) * time.Microsecond
	for i := range 5 {
		p.Ticks = append(p.Ticks, tick{Left: float64(i) * 25, Label: (p.Duration * time.Duration(i) / 4).Round(time.Microsecond).String()})
	}
	children := map[string][]*Span{}
	for i := range t.Spans {
		s := &t.Spans[i]
		parent := s.Parent()
		if !ids[parent] {
			parent = "" // its parent is in another trace, or was not exported
		}
		children[parent] = append(children[parent], s)
	}
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		list := children[parent]
		slices.SortStableFunc(list, func(a, b *Span) int { return cmp.Compare(a.StartTime, b.StartTime) })
		for _, s := range list {
			p.Bars = append(p.Bars, newBar(t, s, depth, start, total))
			if depth < 64 {
				walk(s.SpanID, depth+1)
			}
		}
	}
	walk("", 0)
	return p
}

func newBar(t *Trace, s *Span, depth int, start, total int64) bar {
	svc := t.Processes[s.ProcessID].ServiceName
	h := fnv.New32a()
	h.Write([]byte(svc))
	b := bar{
		Depth: depth, Service: svc, Name: s.OperationName, Check: isDecisionSpan(s),
		Offset: time.Duration(s.StartTime-start) * time.Microsecond, Length: time.Duration(s.Duration) * time.Microsecond,
		Left: 100 * float64(s.StartTime-start) / float64(total), Width: max(0.4, 100*float64(s.Duration)/float64(total)),
		Color: palette[h.Sum32()%uint32(len(palette))],
	}
	b.Left = min(b.Left, 100-b.Width)
	for _, tag := range s.Tags {
		kv := [2]string{tag.Key, fmt.Sprint(tag.Value)}
		if slices.Contains(keyTags, tag.Key) {
			b.Key = append(b.Key, kv)
		} else {
			b.Other = append(b.Other, kv)
		}
		if (tag.Key == "error" && kv[1] == "true") || (tag.Key == "otel.status_code" && kv[1] == "ERROR") {
			b.Error = true
		}
	}
	slices.SortStableFunc(b.Key, func(x, y [2]string) int {
		return cmp.Compare(slices.Index(keyTags, x[0]), slices.Index(keyTags, y[0]))
	})
	for _, l := range s.Logs {
		var fields []string
		for _, f := range l.Fields {
			fields = append(fields, fmt.Sprintf("%s=%v", f.Key, f.Value))
		}
		b.Events = append(b.Events, fmt.Sprintf("+%s %s", time.Duration(l.Timestamp-start)*time.Microsecond, strings.Join(fields, " ")))
	}
	return b
}
