package server

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// Context extension keys. The xDS translator sets them on each inbound listener's ext_authz
// filter (check_settings.context_extensions), because only the control plane knows which
// service a listener serves; Envoy passes them in every CheckRequest.
const (
	// ExtService is the destination service's name. Without it only mesh-wide policies apply.
	ExtService = model.ContextKeyService
	// ExtNamespace is the destination service's namespace; "default" when absent.
	ExtNamespace = model.ContextKeyNamespace
	// ExtPort is the service port the listener serves (destination.port); the port the
	// request arrived on when absent.
	ExtPort = model.ContextKeyPort
)

// badRequest is why a CheckRequest cannot be decided; its text is returned to the client (400),
// so it names what is wrong with the request and nothing of the server.
type badRequest struct{ reason string }

func (e *badRequest) Error() string { return e.reason }

func bad(format string, args ...any) error { return &badRequest{fmt.Sprintf(format, args...)} }

// isDNSLabel reports whether s is a Kubernetes DNS label (what names and namespaces are),
// without a regular expression: it runs on every request.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Attributes reads a CheckRequest into policy attributes. now is used when Envoy sent no request
// time. Errors are client errors (400). The headers map is Envoy's own, shared, not copied.
func Attributes(req *authv3.CheckRequest, now time.Time) (*policy.Attributes, error) {
	ac := req.GetAttributes()
	if ac == nil {
		return nil, bad("the check request has no attributes")
	}
	h := ac.GetRequest().GetHttp()
	if h == nil {
		return nil, bad("not an HTTP request")
	}
	a := &policy.Attributes{}
	if err := readSource(ac.GetSource(), &a.Source); err != nil {
		return nil, err
	}
	if err := readDestination(ac, &a.Destination); err != nil {
		return nil, err
	}
	r := &a.Request
	r.ID, r.Scheme, r.Protocol = h.GetId(), h.GetScheme(), h.GetProtocol()
	r.Method = h.GetMethod()
	if !isToken(r.Method) {
		return nil, bad("invalid method %q", truncate(r.Method, 32))
	}
	var err error
	if r.Path, r.Query, err = policy.NormalizePath(h.GetPath()); err != nil {
		return nil, bad("%v", err)
	}
	if r.Query != "" {
		if _, err := url.ParseQuery(r.Query); err != nil {
			return nil, bad("the query string is malformed")
		}
	}
	r.Host = policy.HostWithoutPort(h.GetHost())
	r.SNI = ac.GetTlsSession().GetSni()
	r.Headers = h.GetHeaders()
	if r.Headers == nil && h.GetHeaderMap() != nil {
		r.Headers = joinHeaders(h.GetHeaderMap().GetHeaders())
	}
	r.Time = now
	if t := ac.GetRequest().GetTime(); t != nil && t.IsValid() {
		r.Time = t.AsTime()
	}
	return a, nil
}

func readSource(p *authv3.AttributeContext_Peer, s *policy.Source) error {
	if sa := p.GetAddress().GetSocketAddress(); sa != nil {
		if addr, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			s.Address = addr
		}
		s.Port = sa.GetPortValue()
	}
	principal := p.GetPrincipal()
	if err := s.SetPrincipal(principal); err != nil {
		// Envoy falls back to a DNS SAN or the subject when the peer certificate has no URI
		// SAN: that is not a workload identity, so the caller is treated as unauthenticated.
		principal = ""
	}
	if cert := p.GetCertificate(); cert != "" {
		return crossCheckCertificate(cert, principal)
	}
	return nil
}

// crossCheckCertificate checks that the peer certificate Envoy passes (URL-encoded PEM, when
// include_peer_certificate is set) carries the principal Envoy reported. Envoy verified the
// chain; a mismatch means the attributes cannot be trusted.
func crossCheckCertificate(encoded, principal string) error {
	raw, err := url.QueryUnescape(encoded)
	if err != nil {
		return bad("the peer certificate is not URL-encoded PEM")
	}
	block, _ := pem.Decode([]byte(raw))
	if block == nil || block.Type != "CERTIFICATE" {
		return bad("the peer certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return bad("the peer certificate does not parse")
	}
	var ids []string
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ids = append(ids, u.String())
		}
	}
	switch {
	case len(ids) > 1:
		return bad("the peer certificate has %d SPIFFE IDs; an X.509-SVID has one", len(ids))
	case len(ids) == 0 && principal != "":
		return bad("the peer certificate has no SPIFFE ID but the source principal is %q", principal)
	case len(ids) == 1 && ids[0] != principal:
		return bad("the peer certificate's SPIFFE ID does not match the source principal")
	}
	return nil
}

func readDestination(ac *authv3.AttributeContext, d *policy.Destination) error {
	ext := ac.GetContextExtensions()
	d.Service = ext[ExtService]
	d.Namespace = ext[ExtNamespace]
	if d.Namespace == "" {
		d.Namespace = model.DefaultNamespace
	}
	if d.Service != "" && !isDNSLabel(d.Service) {
		return bad("context extension %q is not a DNS label", ExtService)
	}
	if !isDNSLabel(d.Namespace) {
		return bad("context extension %q is not a DNS label", ExtNamespace)
	}
	d.Principal = ac.GetDestination().GetPrincipal()
	if p, ok := ext[ExtPort]; ok {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return bad("context extension %q is not a port number", ExtPort)
		}
		d.Port = uint32(n)
	} else if sa := ac.GetDestination().GetAddress().GetSocketAddress(); sa != nil {
		d.Port = sa.GetPortValue()
	}
	return nil
}

// joinHeaders builds the lower-case header map from Envoy's header_map form (sent instead of
// headers when the filter sets encode_raw_headers), joining repeated headers with ",".
func joinHeaders(hs []*corev3.HeaderValue) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		k := strings.ToLower(h.GetKey())
		v := h.GetValue()
		if v == "" && len(h.GetRawValue()) > 0 {
			v = string(h.GetRawValue())
		}
		if prev, ok := m[k]; ok {
			v = prev + "," + v
		}
		m[k] = v
	}
	return m
}

// isToken reports whether s is an RFC 9110 token (what a method must be).
func isToken(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
