package certsvc

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certpb"
)

// Authority is what the service needs of the CA.
type Authority interface {
	TrustDomain() spiffeid.TrustDomain
	SignX509SVID(id spiffeid.ID, pub crypto.PublicKey) (*ca.SVID, error)
	Roots() []*x509.Certificate
	RevokedCert(*x509.Certificate) bool
}

// TokenVerifier checks a join token's signature and expiry.
type TokenVerifier interface {
	Verify(token string) (*attest.Token, error)
}

// ServiceAccountVerifier checks a Kubernetes service-account token (attest.ServiceAccountVerifier).
type ServiceAccountVerifier interface {
	Verify(ctx context.Context, token string) (*attest.ServiceAccount, error)
}

// UsedTokens records single use.
type UsedTokens interface {
	Use(id string, expires time.Time) error
}

// Config configures a Server.
type Config struct {
	CA     Authority
	Tokens TokenVerifier
	Used   UsedTokens
	// ServiceAccounts, when set, accepts Kubernetes service-account tokens (the control plane
	// runs on Kubernetes); nil refuses them.
	ServiceAccounts ServiceAccountVerifier
	Clock           func() time.Time
	Logger          *slog.Logger
	Meter           metric.Meter
	// TracerProvider gets a "ca.sign" span per request; nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Reasons a request is refused, beyond the CSR reasons of package ca; they label the refusal
// metric.
const (
	ReasonNoCredential   ca.Reason = "no_credential"
	ReasonTokenMalformed ca.Reason = "token_malformed"
	ReasonTokenForged    ca.Reason = "token_forged"
	ReasonTokenExpired   ca.Reason = "token_expired"
	ReasonTokenReused    ca.Reason = "token_reused"
	ReasonIDMismatch     ca.Reason = "spiffe_id_mismatch"
	ReasonTrustDomain    ca.Reason = "trust_domain"
	ReasonSVIDInvalid    ca.Reason = "svid_invalid"
	ReasonSVIDExpired    ca.Reason = "svid_expired"
	ReasonSVIDRevoked    ca.Reason = "svid_revoked"
	ReasonInternal       ca.Reason = "internal"
	ReasonSATokenInvalid ca.Reason = "sa_token_invalid"
	ReasonSANotBound     ca.Reason = "sa_token_not_bound"
	ReasonSAPodGone      ca.Reason = "sa_token_pod_gone"
	ReasonSADisabled     ca.Reason = "sa_token_disabled"
	ReasonTwoCredentials ca.Reason = "two_credentials"
)

// Server implements certpb.CertificateServiceServer.
type Server struct {
	certpb.UnimplementedCertificateServiceServer
	cfg     Config
	log     *slog.Logger
	tracer  trace.Tracer
	now     func() time.Time
	issued  metric.Int64Counter
	refused metric.Int64Counter
	byToken metric.MeasurementOption
	bySVID  metric.MeasurementOption
	bySA    metric.MeasurementOption
}

// New returns a certificate service.
func New(cfg Config) (*Server, error) {
	if cfg.CA == nil || cfg.Tokens == nil || cfg.Used == nil {
		return nil, errors.New("certsvc: CA, token verifier and used-token store are required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Clock,
		byToken: metric.WithAttributeSet(attribute.NewSet(attribute.String("credential", "join_token"))),
		bySVID:  metric.WithAttributeSet(attribute.NewSet(attribute.String("credential", "svid"))),
		bySA:    metric.WithAttributeSet(attribute.NewSet(attribute.String("credential", "service_account_token"))),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	s.tracer = tp.Tracer("github.com/portcullis/portcullis/identity/certsvc")
	m := cfg.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var err error
	if s.issued, err = m.Int64Counter("portcullis_ca_svids_issued",
		metric.WithDescription("X.509-SVIDs issued by the certificate service, by credential (join_token, service_account_token, svid).")); err != nil {
		return nil, fmt.Errorf("certsvc: metrics: %w", err)
	}
	if s.refused, err = m.Int64Counter("portcullis_ca_svids_refused",
		metric.WithDescription("Certificate requests refused, by reason.")); err != nil {
		return nil, fmt.Errorf("certsvc: metrics: %w", err)
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) { certpb.RegisterCertificateServiceServer(g, s) }

// refusal is a refused request: what the client is told and what is logged.
type refusal struct {
	code   codes.Code
	reason ca.Reason
	msg    string
}

func refuse(code codes.Code, reason ca.Reason, format string, args ...any) *refusal {
	return &refusal{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// request carries what is known about a request, for the log line.
type request struct {
	peer      string
	credID    spiffeid.ID // the ID the credential is bound to
	credKind  string
	tokenID   string
	requested spiffeid.ID
}

// Sign implements the CertificateService Sign RPC.
func (s *Server) Sign(ctx context.Context, req *certpb.SignRequest) (*certpb.SignResponse, error) {
	r := &request{}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		r.peer = p.Addr.String()
	}
	ctx, span := s.tracer.Start(ctx, "ca.sign", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	resp, ref := s.sign(ctx, req, r)
	span.SetAttributes(attribute.String("portcullis.credential", r.credKind),
		attribute.String("portcullis.spiffe_id", idString(r.requested)))
	if ref != nil {
		span.SetAttributes(attribute.String("portcullis.refused_reason", string(ref.reason)))
		span.SetStatus(otelcodes.Error, ref.msg)
		s.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", string(ref.reason))))
		level := slog.LevelWarn
		if ref.code == codes.Internal || ref.code == codes.Unavailable {
			level = slog.LevelError
		}
		s.log.Log(ctx, level, "certificate request refused", "reason", string(ref.reason), "error", ref.msg,
			"credential", r.credKind, "credential_spiffe_id", idString(r.credID), "token_id", r.tokenID,
			"requested_spiffe_id", idString(r.requested), "peer", r.peer)
		return nil, status.Error(ref.code, ref.msg)
	}
	return resp, nil
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

func (s *Server) sign(ctx context.Context, req *certpb.SignRequest, r *request) (*certpb.SignResponse, *refusal) {
	var token *attest.Token
	var sa *attest.ServiceAccount
	if req.GetJoinToken() != "" && req.GetServiceAccountToken() != "" {
		return nil, refuse(codes.InvalidArgument, ReasonTwoCredentials, "send a join token or a service account token, not both")
	}
	if req.GetServiceAccountToken() != "" {
		r.credKind = "service_account_token"
		a, ref := s.authenticateServiceAccount(ctx, req.GetServiceAccountToken(), r)
		if ref != nil {
			return nil, ref
		}
		sa = a
	} else if req.GetJoinToken() != "" {
		r.credKind = "join_token"
		t, ref := s.authenticateToken(req.GetJoinToken(), r)
		if ref != nil {
			return nil, ref
		}
		token = t
	} else {
		r.credKind = "svid"
		if ref := s.authenticateSVID(ctx, r); ref != nil {
			return nil, ref
		}
	}
	csr, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		var ce *ca.CSRError
		if errors.As(err, &ce) {
			return nil, refuse(codes.InvalidArgument, ce.Reason, "%s", ce.Msg)
		}
		return nil, refuse(codes.InvalidArgument, ca.ReasonCSRMalformed, "%v", err)
	}
	r.requested = csr.ID
	if csr.ID != r.credID {
		return nil, refuse(codes.PermissionDenied, ReasonIDMismatch, "CSR asks for %s but the %s is bound to %s", csr.ID, credName(r.credKind), r.credID)
	}
	// Burn the token only once everything else checked out, so a client bug (a bad CSR) does
	// not cost the workload its single-use token.
	if token != nil {
		if err := s.cfg.Used.Use(token.ID, token.Expires); err != nil {
			if errors.Is(err, attest.ErrTokenReused) {
				return nil, refuse(codes.Unauthenticated, ReasonTokenReused, "join token %s was already used; create a new one (portcullis token create)", token.ID)
			}
			return nil, refuse(codes.Unavailable, ReasonInternal, "recording the token's use failed; try again")
		}
	}
	svid, err := s.cfg.CA.SignX509SVID(csr.ID, csr.PublicKey)
	if err != nil {
		s.log.Error("signing SVID failed", "spiffe_id", csr.ID.String(), "err", err)
		return nil, refuse(codes.Unavailable, ReasonInternal, "the CA could not sign; try again")
	}
	roots := s.cfg.CA.Roots()
	bundle := make([][]byte, len(roots))
	for i, c := range roots {
		bundle[i] = c.Raw
	}
	switch {
	case sa != nil:
		s.issued.Add(ctx, 1, s.bySA)
		s.log.Info("issued SVID for a service account token", "spiffe_id", csr.ID.String(), "pod", sa.Namespace+"/"+sa.Pod,
			"serial", svid.Serial.Text(16), "expires", svid.NotAfter.UTC().Format(time.RFC3339), "peer", r.peer)
	case token != nil:
		s.issued.Add(ctx, 1, s.byToken)
		s.log.Info("issued SVID for a join token", "spiffe_id", csr.ID.String(), "token_id", token.ID,
			"serial", svid.Serial.Text(16), "expires", svid.NotAfter.UTC().Format(time.RFC3339), "peer", r.peer)
	default:
		s.issued.Add(ctx, 1, s.bySVID)
		if s.log.Enabled(ctx, slog.LevelDebug) { // renewals are the hot path: no formatting unless logged
			s.log.Debug("renewed SVID", "spiffe_id", csr.ID.String(), "serial", svid.Serial.Text(16), "peer", r.peer)
		}
	}
	return &certpb.SignResponse{
		CertChain:   svid.Chain,
		TrustBundle: bundle,
		SpiffeId:    svid.ID.String(),
		ExpiresAt:   svid.NotAfter.Unix(),
	}, nil
}

func credName(kind string) string {
	switch kind {
	case "join_token":
		return "join token"
	case "service_account_token":
		return "service account token"
	}
	return "client SVID"
}

// authenticateServiceAccount checks a projected service-account token with the API server. The
// token itself is never logged.
func (s *Server) authenticateServiceAccount(ctx context.Context, raw string, r *request) (*attest.ServiceAccount, *refusal) {
	if s.cfg.ServiceAccounts == nil {
		return nil, refuse(codes.Unauthenticated, ReasonSADisabled, "this control plane does not run on Kubernetes: service account tokens are not accepted")
	}
	sa, err := s.cfg.ServiceAccounts.Verify(ctx, raw)
	switch {
	case err == nil:
	case errors.Is(err, attest.ErrSAReview):
		return nil, refuse(codes.Unavailable, ReasonInternal, "could not check the token with the Kubernetes API server; try again")
	case errors.Is(err, attest.ErrSATokenNotBound):
		return nil, refuse(codes.Unauthenticated, ReasonSANotBound, "%v", err)
	case errors.Is(err, attest.ErrSATokenPodGone):
		return nil, refuse(codes.PermissionDenied, ReasonSAPodGone, "%v", err)
	default:
		return nil, refuse(codes.Unauthenticated, ReasonSATokenInvalid, "%v", err)
	}
	r.credID = sa.SPIFFEID
	if td := s.cfg.CA.TrustDomain(); sa.SPIFFEID.TrustDomain() != td {
		return nil, refuse(codes.PermissionDenied, ReasonTrustDomain, "service account token bound to %s; this CA serves %s", sa.SPIFFEID, td)
	}
	return sa, nil
}

func (s *Server) authenticateToken(raw string, r *request) (*attest.Token, *refusal) {
	t, err := s.cfg.Tokens.Verify(raw)
	if err != nil {
		// The token id is logged when the token parsed; the token itself never is.
		if parsed, perr := attest.Parse(raw); perr == nil {
			r.tokenID, r.credID = parsed.ID, parsed.SPIFFEID
		}
		switch {
		case errors.Is(err, attest.ErrTokenExpired):
			return nil, refuse(codes.Unauthenticated, ReasonTokenExpired, "%v; create a new one (portcullis token create)", err)
		case errors.Is(err, attest.ErrTokenForged):
			return nil, refuse(codes.Unauthenticated, ReasonTokenForged, "join token was not signed by this control plane")
		default:
			return nil, refuse(codes.Unauthenticated, ReasonTokenMalformed, "%v", err)
		}
	}
	r.tokenID, r.credID = t.ID, t.SPIFFEID
	if td := s.cfg.CA.TrustDomain(); t.SPIFFEID.TrustDomain() != td {
		return nil, refuse(codes.PermissionDenied, ReasonTrustDomain, "join token is for trust domain %s; this CA serves %s", t.SPIFFEID.TrustDomain(), td)
	}
	return t, nil
}

// authenticateSVID checks the TLS client certificate. The handshake already verified its chain
// to the bundle (tls.VerifyClientCertIfGiven); a connection outlives certificates, so expiry is
// checked again per request, and revocation only exists here.
func (s *Server) authenticateSVID(ctx context.Context, r *request) *refusal {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return refuse(codes.Unauthenticated, ReasonNoCredential, "no join token and no client certificate")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return refuse(codes.Unauthenticated, ReasonNoCredential, "no join token and no client certificate: send a join token on first contact, or renew over mTLS with your current SVID")
	}
	leaf := info.State.VerifiedChains[0][0]
	r.credKind = "svid"
	id, err := x509svid.IDFromCert(leaf)
	if err != nil || leaf.IsCA {
		return refuse(codes.Unauthenticated, ReasonSVIDInvalid, "client certificate is not an X.509-SVID")
	}
	r.credID = id
	if td := s.cfg.CA.TrustDomain(); id.TrustDomain() != td {
		return refuse(codes.PermissionDenied, ReasonTrustDomain, "client SVID is for trust domain %s; this CA serves %s", id.TrustDomain(), td)
	}
	if now := s.now(); !now.Before(leaf.NotAfter) {
		return refuse(codes.Unauthenticated, ReasonSVIDExpired, "client SVID (serial %s) expired at %s; join again with a new token", leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.cfg.CA.RevokedCert(leaf) {
		return refuse(codes.PermissionDenied, ReasonSVIDRevoked, "client SVID (serial %s) is revoked; join again with a new token", leaf.SerialNumber.Text(16))
	}
	return nil
}
