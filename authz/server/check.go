package server

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/revocation"
	"github.com/portcullis/portcullis/xds/model"
)

// HeaderDecisionID carries the decision id to the application (allowed requests) and to the
// client (every response), so a user reporting a denial can quote it.
const HeaderDecisionID = model.HeaderDecisionID

// Span and attribute names. The attributes are documented in docs/policies.md.
const (
	spanCheck  = "authz.Check"
	spanJWT    = "authz.jwt.verify"
	spanAPIKey = "authz.apikey.verify"
	spanPolicy = "authz.policy.evaluate"
)

// checkSpanOptions start every Check span: built once, not per request. Its attributes are all
// set at the end, in one call (see annotate).
var checkSpanOptions = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// rpcAttributes are the Check span's constant attributes.
var rpcAttributes = [...]attribute.KeyValue{
	attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", "envoy.service.auth.v3.Authorization"), attribute.String("rpc.method", "Check"),
}

// Check implements envoy.service.auth.v3.Authorization/Check. It answers every proxy with a
// decision (never a gRPC error), so Envoy's failure mode only applies when the server is down;
// a caller that is not a proxy (Options.Callers) gets a gRPC error and no decision.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	callerID, cert := peerIdentity(ctx)
	caller := callerID.String()
	if s.callers != nil {
		if err := s.callers.check(callerID, cert); err != nil {
			return nil, s.refuse(ctx, err)
		}
	}
	start := s.now()
	defer func() {
		// A bug must not take the service (and every request behind it) down, nor let a request
		// through: log it and deny.
		if r := recover(); r != nil {
			d := s.early(start, policy.CodeError, "internal error")
			s.log.Error("panic in Check; denying", "decision_id", d.ID, "panic", r, "stack", string(debug.Stack()))
			s.metrics.record(ctx, &d, s.now().Sub(start).Seconds())
			resp, err = s.response(&d, http.StatusInternalServerError), nil
		}
	}()
	ctx, span := s.tracer.Start(parentContext(ctx, req.GetAttributes().GetRequest().GetHttp()), spanCheck, checkSpanOptions...)
	defer span.End()

	var (
		d       policy.Decision
		attrs   *policy.Attributes
		jr      jwt.Result
		kr      apikey.Result
		revoked *revocation.Entry
	)
	engine := s.engine.Load()
	switch engine {
	case nil:
		d = s.early(start, policy.CodeUnavailable, "no valid mesh is loaded yet")
	default:
		var err error
		if attrs, err = readAttributes(req, start, s.certs); err != nil {
			d = s.early(start, policy.CodeBadRequest, err.Error())
			d.MeshVersion = engine.Version()
			break
		}
		if s.verifier.Covers(attrs.Destination.Namespace) {
			jr, revoked = s.verifyJWT(ctx, span, attrs.Destination.Namespace, attrs.Request.Headers, start)
			if jr.Err != nil {
				d = s.early(start, policy.CodeJWTInvalid, "invalid JWT: "+string(jr.Err.Code))
				d.MeshVersion = engine.Version()
				break
			}
			if revoked != nil {
				d = s.early(start, policy.CodeRevoked, "JWT revoked by "+revoked.Document+" "+revoked.Field())
				d.MeshVersion = engine.Version()
				break
			}
			attrs.JWT = jr.Token
		}
		if s.apikeys.Covers(attrs.Destination.Namespace) {
			kr = s.verifyAPIKey(ctx, span, attrs.Destination.Namespace, attrs.Request.Headers, start)
			if kr.Presented && kr.Key == nil {
				code := policy.CodeAPIKeyInvalid
				if kr.Reason == apikey.ReasonRevoked {
					code = policy.CodeRevoked
				}
				d = s.early(start, code, "invalid API key: "+string(kr.Reason))
				d.MeshVersion = engine.Version()
				break
			}
			attrs.APIKey = kr.Key
		}
		d = s.decide(ctx, span, engine, attrs)
	}

	status := httpStatus(d.Code)
	resp = s.response(&d, status)
	if keys := req.GetAttributes().GetContextExtensions()[model.ContextKeyRateLimit]; keys != "" && d.Allow && attrs != nil {
		resp.DynamicMetadata.Fields[model.MetadataVerified] = verifiedAttributes(keys, attrs)
	}
	took := s.now().Sub(start)
	s.metrics.record(ctx, &d, took.Seconds())
	traceID := ""
	if sc := span.SpanContext(); sc.IsValid() {
		traceID = sc.TraceID().String()
	}
	rec := newRecord(&d, status, attrs, &jr, &kr, traceID, took, start)
	rec.Caller = caller
	if revoked != nil && rec.JWT != nil {
		rec.JWT.Revoked = &RecordRevocation{Revocation: revoked.Document, Entry: revoked.Field(), Reason: revoked.Reason}
	}
	s.dlog.Write(rec)
	if span.IsRecording() {
		annotate(span, rpcAttributes[:], &d, status, attrs, caller)
	}
	return resp, nil
}

// early is a decision made before policies: unreadable request, invalid token, no mesh.
func (s *Server) early(now time.Time, code policy.Code, reason string) policy.Decision {
	return policy.Decision{ID: policy.NewDecisionID(now), Code: code, Reason: reason}
}

// verifyJWT verifies the tokens of a request for a destination in namespace ns and looks the
// verified one up in the revocations, in a child span when the check is traced.
func (s *Server) verifyJWT(ctx context.Context, parent trace.Span, ns string, headers map[string][]string, now time.Time) (jwt.Result, *revocation.Entry) {
	if !parent.IsRecording() {
		r := s.verifier.Verify(ctx, ns, headers)
		return r, s.revocations.Load().Revoked(r.Token, now)
	}
	ctx, span := s.tracer.Start(ctx, spanJWT)
	defer span.End()
	r := s.verifier.Verify(ctx, ns, headers)
	if !r.Presented {
		span.SetAttributes(attribute.Bool("authz.jwt.present", false))
		return r, nil
	}
	revoked := s.revocations.Load().Revoked(r.Token, now)
	attrs := attrPool.Get().(*attrBuffer)
	defer attrPool.Put(attrs)
	a := append(attrs[:0], attribute.Bool("authz.jwt.present", true), attribute.Bool("authz.jwt.cache_hit", r.CacheHit),
		attribute.String("authz.jwt.issuer", r.Issuer), attribute.String("authz.jwt.kid", r.KeyID))
	if r.Err != nil {
		a = append(a, attribute.String("authz.jwt.error", string(r.Err.Code)))
		span.SetStatus(codes.Error, string(r.Err.Code))
	}
	if revoked != nil {
		a = append(a, attribute.Bool("authz.jwt.revoked", true), attribute.String("authz.jwt.revocation", revoked.Document+" "+revoked.Field()))
		span.SetStatus(codes.Error, string(policy.CodeRevoked))
	}
	span.SetAttributes(a...)
	return r, revoked
}

// verifyAPIKey verifies the API key of a request for a destination in namespace ns, in a child
// span when the check is traced. The span names the key by its id, never by its text.
func (s *Server) verifyAPIKey(ctx context.Context, parent trace.Span, ns string, headers map[string][]string, now time.Time) apikey.Result {
	if !parent.IsRecording() {
		return s.apikeys.Verify(ns, headers, now)
	}
	_, span := s.tracer.Start(ctx, spanAPIKey)
	defer span.End()
	r := s.apikeys.Verify(ns, headers, now)
	if !r.Presented {
		span.SetAttributes(attribute.Bool("authz.apikey.present", false))
		return r
	}
	a := []attribute.KeyValue{attribute.Bool("authz.apikey.present", true), attribute.String("authz.apikey.id", r.ID)}
	if r.Key != nil {
		a = append(a, attribute.String("authz.apikey.identity", r.Key.Identity), attribute.String("authz.apikey.provider", r.Key.Provider))
	} else {
		a = append(a, attribute.String("authz.apikey.error", string(r.Reason)))
		span.SetStatus(codes.Error, string(r.Reason))
	}
	span.SetAttributes(a...)
	return r
}

// decide evaluates policies, in a child span when the check is traced. The decision itself is
// on the Check span (annotate): this span says how long evaluation took and on which mesh.
func (s *Server) decide(ctx context.Context, parent trace.Span, e *policy.Engine, a *policy.Attributes) policy.Decision {
	if !parent.IsRecording() {
		return e.Decide(ctx, a)
	}
	ctx, span := s.tracer.Start(ctx, spanPolicy)
	defer span.End()
	d := e.Decide(ctx, a)
	attrs := attrPool.Get().(*attrBuffer)
	defer attrPool.Put(attrs)
	as := append(attrs[:0], attribute.String("authz.mesh_version", d.MeshVersion), attribute.Int("authz.audits", len(d.Audits)))
	if d.DryRun != nil {
		as = append(as, attribute.String("authz.dry_run.decision", string(outcome(d.DryRun.Allow))),
			attribute.String("authz.dry_run.policy", d.DryRun.Policy), attribute.Bool("authz.dry_run.changed", d.DryRun.Changed))
	}
	span.SetAttributes(as...)
	if len(d.Errors) > 0 {
		span.SetStatus(codes.Error, "rego evaluation failed (failed closed)")
	}
	return d
}

// attrBuffer holds a span's attributes while they are handed to the SDK, which copies them:
// pooled, so a traced check does not allocate a slice per span for them.
type attrBuffer [16]attribute.KeyValue

var attrPool = sync.Pool{New: func() any { return new(attrBuffer) }}

func outcome(allow bool) string {
	if allow {
		return "ALLOW"
	}
	return "DENY"
}

// annotate puts the request's decision on its span (kind: Check's RPC attributes, or the mark
// of a decision Envoy made), every attribute in one call so the SDK sizes the span's attribute
// slice once. A denial is the service working, not failing: the span status stays unset,
// authz.decision says what happened. The token's details are on the JWT span alone;
// authz.caller is the proxy that asked (its SVID).
func annotate(span trace.Span, kind []attribute.KeyValue, d *policy.Decision, status int, a *policy.Attributes, caller string) {
	attrs := attrPool.Get().(*attrBuffer)
	defer attrPool.Put(attrs)
	as := append(attrs[:0], kind...)
	as = append(as,
		attribute.String("authz.decision_id", d.ID),
		attribute.String("authz.decision", string(d.Outcome())),
		attribute.String("authz.code", string(d.Code)),
		attribute.String("authz.policy", d.Policy),
		attribute.String("authz.rule", d.Rule),
		attribute.String("authz.reason", d.Reason),
		attribute.Int64("authz.eval_us", d.Duration.Microseconds()),
		attribute.Int("http.response.status_code", status),
		attribute.String("authz.caller", caller),
	)
	if a != nil {
		as = append(as,
			attribute.String("authz.principal", a.Source.Principal),
			attribute.String("authz.destination", a.Destination.Namespace+"/"+a.Destination.Service),
		)
	}
	span.SetAttributes(as...)
}

// httpStatus maps a decision code to the status a denied client sees.
func httpStatus(c policy.Code) int {
	switch c {
	case policy.CodeAllowed, policy.CodeAllowedDefault:
		return http.StatusOK
	case policy.CodeJWTRequired, policy.CodeJWTInvalid, policy.CodeRevoked, policy.CodeAPIKeyInvalid:
		return http.StatusUnauthorized
	case policy.CodeBadRequest:
		return http.StatusBadRequest
	case policy.CodeUnavailable:
		return http.StatusServiceUnavailable
	case policy.CodeError:
		return http.StatusInternalServerError
	}
	return http.StatusForbidden
}

func grpcCode(status int) grpccodes.Code {
	switch status {
	case http.StatusOK:
		return grpccodes.OK
	case http.StatusUnauthorized:
		return grpccodes.Unauthenticated
	case http.StatusBadRequest:
		return grpccodes.InvalidArgument
	case http.StatusServiceUnavailable:
		return grpccodes.Unavailable
	case http.StatusInternalServerError:
		return grpccodes.Internal
	}
	return grpccodes.PermissionDenied
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// Headers every denial carries. Messages are shared between responses: gRPC only reads them.
var (
	headerJSON    = header("content-type", "application/json")
	headerNoStore = header("cache-control", "no-store")
)

// errorBody is what a denied client reads: the decision id to quote, nothing internal. A bad
// request also says what is wrong with it.
type errorBody struct {
	Error      string `json:"error"`
	Status     int    `json:"status"`
	DecisionID string `json:"decision_id"`
	Reason     string `json:"reason,omitempty"`
}

// metaValue returns a shared structpb value for a string that repeats across decisions (code,
// policy, rule names), so the dynamic metadata of a response allocates only its id.
func (s *Server) metaValue(v string) *structpb.Value {
	if x, ok := s.metaValues.Load(v); ok {
		return x.(*structpb.Value)
	}
	x, _ := s.metaValues.LoadOrStore(v, structpb.NewStringValue(v))
	return x.(*structpb.Value)
}

func (s *Server) response(d *policy.Decision, status int) *authv3.CheckResponse {
	// Envoy puts dynamic metadata under the filter's name, for access logs:
	// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%.
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{
		"decision_id": structpb.NewStringValue(d.ID),
		"code":        s.metaValue(string(d.Code)),
		"policy":      s.metaValue(d.Policy),
		"rule":        s.metaValue(d.Rule),
	}}
	id := header(HeaderDecisionID, d.ID)
	if d.Allow {
		return &authv3.CheckResponse{
			Status:          &rpcstatus.Status{Code: int32(grpccodes.OK)},
			DynamicMetadata: meta,
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				// Overwrite, so a client cannot send the application a decision id of its own.
				Headers:              []*corev3.HeaderValueOption{id},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{id},
			}},
		}
	}
	body := errorBody{Status: status, DecisionID: d.ID}
	hs := make([]*corev3.HeaderValueOption, 3, 4) // room for WWW-Authenticate
	hs[0], hs[1], hs[2] = headerJSON, id, headerNoStore
	switch status {
	case http.StatusUnauthorized:
		body.Error = "unauthenticated"
		challenge := `Bearer realm="portcullis"`
		if d.Code == policy.CodeJWTInvalid || d.Code == policy.CodeRevoked || d.Code == policy.CodeAPIKeyInvalid {
			// RFC 6750: invalid_token covers a revoked one. A refused API key reads the same
			// whatever the reason, revoked or not.
			challenge += `, error="invalid_token"`
		}
		hs = append(hs, header("www-authenticate", challenge))
	case http.StatusBadRequest:
		body.Error, body.Reason = "bad_request", d.Reason
	case http.StatusServiceUnavailable:
		body.Error = "unavailable"
	case http.StatusInternalServerError:
		body.Error = "internal"
	default:
		body.Error = "forbidden"
	}
	b, err := json.Marshal(body)
	if err != nil {
		b = []byte(`{"error":"forbidden"}`) // cannot happen: strings and ints only
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(grpcCode(status)), Message: string(d.Code)},
		DynamicMetadata: meta,
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: hs,
			Body:    string(b) + "\n",
		}},
	}
}
