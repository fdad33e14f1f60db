package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// Envoy's names for what its filters write.
const (
	rbacMetadata      = "envoy.filters.http.rbac"
	rbacDeniedDetails = "rbac_access_denied_matched_policy["
	jwtDeniedDetails  = "jwt_authn_access_denied"
	spanEnvoyDecision = "authz.envoy_decision"
)

// AccessLog serves envoy.service.accesslog.v3.AccessLogService beside Check: the inbound proxies'
// record of the requests their RBAC filters decided (Mesh.spec.authz.engine auto), from which it
// writes the decision-log records, metrics and spans Check writes for the requests it decides,
// with the same schema, so the audit trail does not depend on where a decision was made.
type AccessLog struct {
	alsv3.UnimplementedAccessLogServiceServer
	s *Server
}

// AccessLog returns the access log service of s; register it on the same gRPC server.
func (s *Server) AccessLog() *AccessLog { return &AccessLog{s: s} }

// Register adds the service to a gRPC server.
func (a *AccessLog) Register(r grpc.ServiceRegistrar) { alsv3.RegisterAccessLogServiceServer(r, a) }

// StreamAccessLogs takes the entries of one proxy's stream. Only proxies may send them (the same
// callers as Check); a stream under another log name is refused, so no other access log of the
// proxy's lands in the decision log.
func (a *AccessLog) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	s := a.s
	ctx := stream.Context()
	callerID, cert := peerIdentity(ctx)
	if s.callers != nil {
		if err := s.callers.check(callerID, cert); err != nil {
			return s.refuse(ctx, err)
		}
	}
	caller := callerID.String()
	named := false
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if id := msg.GetIdentifier(); id != nil {
			if id.GetLogName() != model.AccessLogName {
				return status.Errorf(codes.InvalidArgument, "access log %q: this service takes only %q", id.GetLogName(), model.AccessLogName)
			}
			named = true
		}
		if !named {
			return status.Error(codes.InvalidArgument, "the stream's first message names no log")
		}
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			s.recordEnvoyDecision(ctx, caller, e)
		}
	}
}

// recordEnvoyDecision writes the record, metric and span of one request an RBAC filter decided.
// An entry without RBAC results (the access log's filter lets none through) is skipped.
func (s *Server) recordEnvoyDecision(ctx context.Context, caller string, e *alogv3.HTTPAccessLogEntry) {
	c := e.GetCommonProperties()
	meta := c.GetMetadata().GetFilterMetadata()
	rbac := meta[rbacMetadata].GetFields()
	details := e.GetResponse().GetResponseCodeDetails()
	jr := envoyJWT(meta[model.JWTAuthnMetadata].GetFields())
	var d policy.Decision
	switch {
	case jr.Err != nil && strings.HasPrefix(details, jwtDeniedDetails):
		d = policy.Decision{Code: policy.CodeJWTInvalid, Reason: "invalid JWT: " + string(jr.Err.Code) + " (decided in Envoy)"}
	case rbac != nil:
		d = envoyDecision(rbac, details, int(e.GetResponse().GetResponseCode().GetValue()))
	default:
		return
	}
	start := c.GetStartTime().AsTime()
	d.ID = c.GetStreamId()
	if d.ID == "" {
		d.ID = policy.NewDecisionID(start)
	}
	if engine := s.engine.Load(); engine != nil {
		d.MeshVersion = engine.Version()
	}
	// The request as Check reads it, so the record and the span are the ones Check writes.
	req := e.GetRequest()
	a := &policy.Attributes{
		Source: policy.Source{Address: socketIP(c.GetDownstreamRemoteAddress())},
		Request: policy.Request{
			ID: req.GetRequestId(), Method: req.GetRequestMethod().String(), Path: strings.SplitN(req.GetPath(), "?", 2)[0],
			Host: policy.HostWithoutPort(req.GetAuthority()), Protocol: protocolName(e.GetProtocolVersion()),
		},
	}
	_ = a.Source.SetPrincipal(peerPrincipal(c)) // not a SPIFFE ID: unauthenticated, as in Check
	a.JWT = jr.Token
	tags := c.GetCustomTags()
	a.Destination.Service, a.Destination.Namespace = tags[model.AccessLogTagService], tags[model.AccessLogTagNamespace]
	if p, err := strconv.ParseUint(tags[model.AccessLogTagPort], 10, 16); err == nil {
		a.Destination.Port = uint32(p)
	}
	// The request's own trace context (the access log sends its traceparent), not the stream's.
	parent := traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": req.GetRequestHeaders()["traceparent"]})
	traceID := ""
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
		traceID = sc.TraceID().String()
	}
	status := httpStatus(d.Code)
	took := c.GetDuration().AsDuration()
	rec := newRecord(&d, status, a, &jr, nil, traceID, took, start)
	rec.Caller = caller
	s.metrics.count(ctx, &d)
	s.dlog.Write(rec)
	_, span := s.tracer.Start(parent, spanEnvoyDecision, trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(start))
	if span.IsRecording() {
		annotate(span, envoyAttributes[:], &d, status, a, caller)
	}
	span.End(trace.WithTimestamp(start.Add(took)))
}

// envoyAttributes mark a decision span as Envoy's (rpcAttributes mark Check's).
var envoyAttributes = [...]attribute.KeyValue{attribute.String("authz.engine", "envoy")}

// envoyDecision reads what the RBAC filters decided: the DENY filter's match denies; else the
// ALLOW filter's result (its match allows, its refusal is the mesh default DENY); with no ALLOW
// filter the mesh default ALLOW; dry-run policies are the shadow rules (envoyDryRun). code is the status Envoy
// answered, which tells a denial by the DENY filter (403 with its policy in the details) apart.
func envoyDecision(rbac map[string]*structpb.Value, details string, code int) policy.Decision {
	str := func(k string) string { return rbac[k].GetStringValue() }
	var d policy.Decision
	denyID, allowResult := str(model.RBACDenyPrefix+"enforced_effective_policy_id"), str(model.RBACAllowPrefix+"enforced_engine_result")
	switch {
	case str(model.RBACDenyPrefix+"enforced_engine_result") == "denied" && denyID != "":
		d.Code = policy.CodeDenied
		d.Policy, d.Rule, _ = model.ParseNativePolicyID(denyID)
		d.Reason = "a DENY rule matched (decided in Envoy)"
	case allowResult == "denied":
		d.Code = policy.CodeDeniedDefault
		d.Reason = "no ALLOW policy matched; the mesh default is DENY (decided in Envoy)"
	case allowResult == "allowed":
		var ok bool
		d.Allow = true
		if d.Policy, d.Rule, ok = model.ParseNativePolicyID(str(model.RBACAllowPrefix + "enforced_effective_policy_id")); ok {
			d.Code, d.Reason = policy.CodeAllowed, "an ALLOW rule matched (decided in Envoy)"
		} else { // model.NativeDefaultPolicyID
			d.Code, d.Reason = policy.CodeAllowedDefault, "no ALLOW policy matched; the mesh default is ALLOW (decided in Envoy)"
		}
	default:
		d.Allow, d.Code = true, policy.CodeAllowedDefault
		d.Reason = "no ALLOW policy matched; the mesh default is ALLOW (decided in Envoy)"
	}
	// Envoy's answer is the ground truth: a 403 whose details name an RBAC policy is a denial
	// whatever the metadata said.
	if code == http.StatusForbidden && strings.HasPrefix(details, rbacDeniedDetails) && d.Allow {
		d.Allow, d.Code = false, policy.CodeDeniedDefault
		d.Reason = "denied in Envoy: " + details
	}
	d.DryRun = envoyDryRun(d, str)
	return d
}

// envoyJWT reads what jwt_authn wrote: the verified token's claims, else why a provider refused
// the token (its status message, a fixed text of Envoy's, mapped to the verifier's codes; with
// several providers, one whose issuer is not the token's refuses it too, which only counts when
// jwt_authn refused the request). Empty when the request had no token, or was not verified in
// Envoy.
func envoyJWT(meta map[string]*structpb.Value) jwt.Result {
	payload := meta[model.JWTPayloadKey].GetStructValue()
	if payload == nil {
		if failed := meta[model.JWTFailedKey].GetStructValue(); failed != nil {
			msg := failed.GetFields()["message"].GetStringValue()
			return jwt.Result{Presented: true, Err: &jwt.Error{Code: envoyJWTCode(msg), Detail: msg}}
		}
		return jwt.Result{}
	}
	claims := payload.AsMap()
	t, err := jwt.NewToken(nil, claims)
	if err != nil { // Envoy verified it: unreachable
		return jwt.Result{Presented: true}
	}
	return jwt.Result{Presented: true, Token: t, Issuer: t.Issuer}
}

// envoyJWTCodes map jwt_authn's status messages (google::jwt_verify::Status) to the verifier's
// rejection codes, the first phrase found deciding.
var envoyJWTCodes = []struct {
	phrase string
	code   jwt.Code
}{
	{"expired", jwt.CodeExpired},
	{"not yet valid", jwt.CodeNotYetValid},
	{"Audiences", jwt.CodeAudience},
	{"issuer", jwt.CodeUnknownIssuer},
	{"kid", jwt.CodeUnknownKey},
	{"verification fail", jwt.CodeSignature},
	{"[exp]", jwt.CodeMissingExpiry},
	{"alg", jwt.CodeAlgorithm},
}

func envoyJWTCode(msg string) jwt.Code {
	for _, c := range envoyJWTCodes {
		if strings.Contains(msg, c.phrase) {
			return c.code
		}
	}
	return jwt.CodeMalformed
}

// envoyDryRun is what the dry-run policies would have decided, from the shadow rules: the DENY
// filter's are the dry-run DENY policies (a match would deny), the ALLOW filter's the enforced
// and the dry-run ALLOW policies together (a match where the default decided would allow). Nil
// when the filters have no shadow rules: no dry-run policy applies. Each filter reports one
// match, the first by name: where several dry-run policies of one action match, the record
// names one (the service's names each), and a dry-run ALLOW matching beside a DENY that decided
// is not named (the decision, and what the dry runs would change, are the service's).
func envoyDryRun(d policy.Decision, str func(string) string) *policy.DryRun {
	denyShadow, allowShadow := str(model.RBACDenyPrefix+"shadow_engine_result"), str(model.RBACAllowPrefix+"shadow_engine_result")
	if denyShadow == "" && allowShadow == "" {
		return nil
	}
	dr := &policy.DryRun{Allow: d.Allow, Code: d.Code, Policy: d.Policy, Rule: d.Rule}
	// The ALLOW shadow's match is a dry-run policy's when it is not the enforced one that matched;
	// it decides only where no enforced policy did (the mesh default decided).
	if p, r, ok := model.ParseNativePolicyID(str(model.RBACAllowPrefix + "shadow_effective_policy_id")); ok && allowShadow == "allowed" && (p != d.Policy || r != d.Rule) {
		dr.Matches = append(dr.Matches, policy.Match{Policy: p, Rule: r, Action: model.ActionAllow})
		if d.Code == policy.CodeAllowedDefault || d.Code == policy.CodeDeniedDefault {
			dr.Allow, dr.Code, dr.Policy, dr.Rule = true, policy.CodeAllowed, p, r
		}
	}
	if p, r, ok := model.ParseNativePolicyID(str(model.RBACDenyPrefix + "shadow_effective_policy_id")); ok && denyShadow == "denied" {
		dr.Matches = append(dr.Matches, policy.Match{Policy: p, Rule: r, Action: model.ActionDeny})
		if d.Code != policy.CodeDenied {
			dr.Allow, dr.Code, dr.Policy, dr.Rule = false, policy.CodeDenied, p, r
		}
	}
	dr.Changed = dr.Allow != d.Allow
	return dr
}

// peerPrincipal is the SPIFFE ID among the peer certificate's URI SANs, as Envoy reports it.
func peerPrincipal(c *alogv3.AccessLogCommon) string {
	for _, san := range c.GetTlsProperties().GetPeerCertificateProperties().GetSubjectAltName() {
		if u := san.GetUri(); strings.HasPrefix(u, "spiffe://") {
			return u
		}
	}
	return ""
}

func socketIP(a *corev3.Address) netip.Addr {
	ip, _ := netip.ParseAddr(a.GetSocketAddress().GetAddress()) // invalid when absent
	return ip
}

func protocolName(v alogv3.HTTPAccessLogEntry_HTTPVersion) string {
	switch v {
	case alogv3.HTTPAccessLogEntry_HTTP10:
		return "HTTP/1.0"
	case alogv3.HTTPAccessLogEntry_HTTP11:
		return "HTTP/1.1"
	case alogv3.HTTPAccessLogEntry_HTTP2:
		return "HTTP/2"
	case alogv3.HTTPAccessLogEntry_HTTP3:
		return "HTTP/3"
	}
	return ""
}
