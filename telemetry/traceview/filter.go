package traceview

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Views of the list: requests through the mesh, or the control plane's own traces.
const (
	viewRequests = "requests"
	viewControl  = "control"
)

// Filter is what the list shows, read from the page's query string.
type Filter struct {
	View       string
	Decision   string // one of the Decision constants
	Code       int    // HTTP status where the request was decided
	Policy     string // namespace/name
	Service    string // a service the trace crossed
	Path       string // exact, or a prefix ending in *
	DecisionID string
	Operation  string            // control view: the span name (config.load, xds.reconcile, ...)
	Tag        map[string]string // key:value, any span tag, sent to Jaeger as is
	Since      time.Duration     // how far back from now
	Before     time.Time         // the page's cursor: traces that started before it
	Limit      int               // rows per page
}

var decisions = []string{DecisionAllow, DecisionDeny, DecisionRateLimited, DecisionAuthzDown}

// Filter bounds.
const (
	defaultSince = time.Hour
	maxSince     = 7 * 24 * time.Hour
	defaultLimit = 25
	maxLimit     = 200
)

// ParseFilter reads a filter; a malformed parameter is an error naming it and what it takes,
// never silently dropped.
func ParseFilter(q url.Values, now time.Time) (Filter, error) {
	f := Filter{View: viewRequests, Since: defaultSince, Limit: defaultLimit, Tag: map[string]string{}}
	var errs []string
	bad := func(param, got, want string) { errs = append(errs, fmt.Sprintf("%s=%q: %s", param, got, want)) }
	for k := range q {
		if !slices.Contains([]string{"view", "decision", "code", "policy", "service", "path", "decision_id", "op", "tag", "since", "before", "limit"}, k) {
			bad(k, q.Get(k), "unknown filter (use view, decision, code, policy, service, path, decision_id, op, tag, since, before, limit)")
		}
	}
	if v := q.Get("view"); v != "" {
		if v != viewRequests && v != viewControl {
			bad("view", v, "want requests or control")
		}
		f.View = v
	}
	if v := q.Get("decision"); v != "" {
		f.Decision = strings.ToUpper(v)
		if !slices.Contains(decisions, f.Decision) {
			bad("decision", v, "want one of "+strings.Join(decisions, ", "))
		}
	}
	if v := q.Get("code"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 || n > 599 {
			bad("code", v, "want an HTTP status, e.g. 401, 403, 429 or 503")
		}
		f.Code = n
	}
	if v := q.Get("policy"); v != "" {
		if ns, name, ok := strings.Cut(v, "/"); !ok || ns == "" || name == "" {
			bad("policy", v, "want namespace/name, e.g. demo/backend-deny-debug")
		}
		f.Policy = v
	}
	f.Service, f.DecisionID, f.Operation = q.Get("service"), q.Get("decision_id"), q.Get("op")
	if v := q.Get("path"); v != "" {
		if !strings.HasPrefix(v, "/") || strings.Contains(strings.TrimSuffix(v, "*"), "*") {
			bad("path", v, "want a path starting with /, with at most a trailing * for a prefix")
		}
		f.Path = v
	}
	for _, v := range q["tag"] {
		if v == "" {
			continue
		}
		k, val, ok := strings.Cut(v, ":")
		if !ok || k == "" || strings.Contains(k, "=") {
			bad("tag", v, "want key:value, e.g. authz.decision:DENY")
			continue
		}
		f.Tag[k] = val
	}
	if v := q.Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxSince {
			bad("since", v, "want a duration up to 168h, e.g. 15m or 2h")
		}
		f.Since = d
	}
	if v := q.Get("before"); v != "" {
		t, err := parseTime(v)
		if err != nil {
			bad("before", v, "want a time (RFC 3339, or µs since the epoch as the older-page link gives)")
		}
		f.Before = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			bad("limit", v, fmt.Sprintf("want 1 to %d rows", maxLimit))
		}
		f.Limit = n
	}
	if f.View == viewControl && (f.Decision != "" || f.Code != 0 || f.Policy != "" || f.Path != "" || f.DecisionID != "") {
		errs = append(errs, "decision, code, policy, path and decision_id select requests: they do not apply to view=control")
	}
	if f.Before.IsZero() || f.Before.After(now) {
		f.Before = now
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return f, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return f, nil
}

func parseTime(v string) (time.Time, error) {
	if us, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.UnixMicro(us), nil
	}
	return time.Parse(time.RFC3339Nano, v)
}

// Match reports whether a request's summary passes the filter's request filters.
func (f *Filter) Match(r *Request) bool {
	code := r.Code
	if code == 0 {
		code = r.Status
	}
	switch {
	case f.Decision != "" && r.Decision != f.Decision,
		f.Code != 0 && code != f.Code,
		f.Policy != "" && r.Policy != f.Policy,
		f.DecisionID != "" && r.ID != f.DecisionID,
		f.Service != "" && !slices.Contains(r.Services, f.Service):
		return false
	case f.Path == "":
		return true
	case strings.HasSuffix(f.Path, "*"):
		return strings.HasPrefix(r.Path, strings.TrimSuffix(f.Path, "*"))
	}
	return r.Path == f.Path
}

// jaegerTags are the filters Jaeger can apply itself on a proxy's span, to narrow what is
// fetched; Match decides.
func (f *Filter) jaegerTags() map[string]string {
	tags := map[string]string{}
	for k, v := range f.Tag {
		tags[k] = v
	}
	if f.Code != 0 {
		tags[tagStatus] = strconv.Itoa(f.Code)
	}
	if f.Policy != "" {
		tags[tagPolicy] = f.Policy
	}
	if f.DecisionID != "" {
		tags[tagDecisionID] = f.DecisionID
	}
	return tags
}

// query is the filter as a query string, with the given changes ("" deletes a parameter).
func (f *Filter) query(changes ...string) string {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.View != viewRequests {
		set("view", f.View)
	}
	set("decision", f.Decision)
	if f.Code != 0 {
		set("code", strconv.Itoa(f.Code))
	}
	set("policy", f.Policy)
	set("service", f.Service)
	set("path", f.Path)
	set("decision_id", f.DecisionID)
	set("op", f.Operation)
	for k, v := range f.Tag {
		q.Add("tag", k+":"+v)
	}
	if f.Since != defaultSince {
		set("since", f.Since.String())
	}
	if f.Limit != defaultLimit {
		set("limit", strconv.Itoa(f.Limit))
	}
	for i := 0; i+1 < len(changes); i += 2 {
		if changes[i+1] == "" {
			q.Del(changes[i])
		} else {
			q.Set(changes[i], changes[i+1])
		}
	}
	return q.Encode()
}
