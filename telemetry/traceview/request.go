package traceview

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Decisions a request row shows. ALLOW and DENY are the authorization service's; the others are
// refusals made before it decided.
const (
	DecisionAllow       = "ALLOW"
	DecisionDeny        = "DENY"
	DecisionRateLimited = "RATE_LIMITED"      // the callee's Envoy's local rate limit (429, response flag RL)
	DecisionAuthzDown   = "AUTHZ_UNREACHABLE" // ext_authz failed without a decision (response flag UAEX, no decision id)
)

// Span tags the summary reads: Envoy's, those Portcullis adds to its routes (docs/tracing.md),
// and the authorization service's.
const (
	tagDirection  = "portcullis.direction"
	tagDecisionID = "portcullis.decision_id"
	tagCode       = "portcullis.decision.code"
	tagPolicy     = "portcullis.decision.policy"
	tagRule       = "portcullis.decision.rule"
	tagSource     = "portcullis.source.principal"
	tagDest       = "portcullis.destination.principal"
	tagMethod     = "http.method"
	tagURL        = "http.url"
	tagStatus     = "http.status_code"
	tagFlags      = "response_flags"
	spanCheck     = "authz.Check"
	// spanEnvoyDecision is the authorization service's record of a decision Envoy's RBAC made
	// (engine auto): the same authz.* tags as a Check.
	spanEnvoyDecision = "authz.envoy_decision"
)

// isDecisionSpan tells the spans that carry a decision's authz.* tags.
func isDecisionSpan(s *Span) bool {
	return s.OperationName == spanCheck || s.OperationName == spanEnvoyDecision
}

// Request is a request's trace summarized: what was asked, what the caller got, and who decided.
type Request struct {
	TraceID  string
	Start    time.Time
	Duration time.Duration
	Spans    int
	Method   string
	Path     string // without the query string, which may carry secrets
	Status   int    // what the caller got (the first proxy's response); 0 when unknown
	// Decision is one of the Decision constants, "" when no proxy refused and none asked
	// authorization (a request no policy covers, or one to a service outside the mesh).
	Decision string
	// Code is the HTTP status where the request was decided (401, 403, 429, 503, 200);
	// AuthzCode the authorization service's decision code (denied, jwt_required, ...).
	Code                     int
	AuthzCode                string
	Policy, Rule, Reason, ID string // ID: the decision id (x-portcullis-decision-id)
	Source, Destination      string // SPIFFE IDs of the caller and the callee at the deciding hop
	Services                 []string
}

// Denied reports whether the request was refused on its way (by policy, token, rate limit or an
// unreachable authorization service).
func (r *Request) Denied() bool { return r.Decision != "" && r.Decision != DecisionAllow }

// IsRequest reports whether a trace is a request through the mesh (it has a proxy's span)
// rather than the control plane's own work.
func IsRequest(t *Trace) bool {
	for i := range t.Spans {
		if t.Spans[i].Tag(tagDirection) != "" {
			return true
		}
	}
	return false
}

// Summarize reads a request trace: the first proxy span gives method, path and the status the
// caller saw; the first inbound hop that refused (or else the last that allowed) gives the
// decision, its code, policy and rule; the authorization Check (or, for a decision Envoy's RBAC
// made, the service's authz.envoy_decision span) with the same decision id gives the reason.
func Summarize(t *Trace) Request {
	r := Request{TraceID: t.TraceID, Spans: len(t.Spans)}
	spans := slices.Clone(t.Spans)
	slices.SortStableFunc(spans, func(a, b Span) int { return cmp.Compare(a.StartTime, b.StartTime) })
	var first, last int64
	for i, s := range spans {
		if i == 0 {
			first = s.StartTime
		}
		last = max(last, s.StartTime+s.Duration)
		if svc := t.Processes[s.ProcessID].ServiceName; svc != "" && !slices.Contains(r.Services, svc) {
			r.Services = append(r.Services, svc)
		}
	}
	r.Start, r.Duration = time.UnixMicro(first), time.Duration(last-first)*time.Microsecond
	var allowed *Span
	for i := range spans {
		s := &spans[i]
		if s.Tag(tagDirection) == "" {
			continue
		}
		if r.Method == "" && s.Tag(tagMethod) != "" {
			r.Method, r.Path, r.Status = s.Tag(tagMethod), urlPath(s.Tag(tagURL)), atoi(s.Tag(tagStatus))
		}
		if s.Tag(tagDirection) != "inbound" || r.Decision != "" {
			continue
		}
		flags := s.Tag(tagFlags)
		switch code := s.Tag(tagCode); {
		case hasFlag(flags, "RL"):
			r.decide(s, DecisionRateLimited)
		case s.Tag(tagDecisionID) != "" && strings.HasPrefix(code, "allowed"):
			allowed = s
		case s.Tag(tagDecisionID) != "":
			r.decide(s, DecisionDeny)
		case hasFlag(flags, "UAEX"):
			r.decide(s, DecisionAuthzDown)
		}
	}
	if r.Decision == "" && allowed != nil {
		r.decide(allowed, DecisionAllow)
	}
	for i := range spans {
		if s := &spans[i]; isDecisionSpan(s) && (r.ID == "" || s.Tag("authz.decision_id") == r.ID) {
			r.Reason, r.AuthzCode = s.Tag("authz.reason"), cmp.Or(r.AuthzCode, s.Tag("authz.code"))
			if r.ID == "" { // the proxies did not tag the decision: take it from the Check
				r.ID, r.Policy, r.Rule = s.Tag("authz.decision_id"), s.Tag("authz.policy"), s.Tag("authz.rule")
				r.Decision, r.Code = s.Tag("authz.decision"), atoi(s.Tag("http.response.status_code"))
			}
			break
		}
	}
	return r
}

func (r *Request) decide(s *Span, decision string) {
	r.Decision, r.Code = decision, atoi(s.Tag(tagStatus))
	r.ID, r.AuthzCode, r.Policy, r.Rule = s.Tag(tagDecisionID), s.Tag(tagCode), s.Tag(tagPolicy), s.Tag(tagRule)
	r.Source, r.Destination = s.Tag(tagSource), s.Tag(tagDest)
}

// hasFlag reports whether Envoy's response flags (comma-separated short names) include f.
func hasFlag(flags, f string) bool { return slices.Contains(strings.Split(flags, ","), f) }

func urlPath(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Path == "" {
		return ""
	}
	return u.Path
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
