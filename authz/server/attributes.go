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
	return readAttributes(req, now, nil)
}

// readAttributes is Attributes with the peer certificates already parsed remembered in certs
// (nil: parse every one).
func readAttributes(req *authv3.CheckRequest, now time.Time, certs *peerCerts) (*policy.Attributes, error) {
	ac := req.GetAttributes()
	if ac == nil {
		return nil, bad("the check request has no attributes")
	}
	h := ac.GetRequest().GetHttp()
	if h == nil {
		return nil, bad("not an HTTP request")
	}
	a := &policy.Attributes{}
	if err := readSource(ac.GetSource(), &a.Source, certs); err != nil {
		return nil, err
	}
	if err := readDestination(ac, &a.Destination); err != nil {
		return nil, err
	}
	r := &a.Request
	r.ID, r.Scheme, r.Protocol = h.GetId(), h.GetScheme(), h.GetProtocol()
	r.Method = h.GetMethod()
	if err := policy.CheckMethod(r.Method); err != nil {
		return nil, bad("%s", truncate(err.Error(), 160))
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
	if hm := h.GetHeaderMap(); hm != nil {
		r.Headers = headerLists(hm.GetHeaders())
	} else {
		r.Headers = joinedHeaders(h.GetHeaders())
	}
	r.Time = now
	if t := ac.GetRequest().GetTime(); t != nil && t.IsValid() {
		r.Time = t.AsTime()
	}
	return a, nil
}

func readSource(p *authv3.AttributeContext_Peer, s *policy.Source, certs *peerCerts) error {
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
		return crossCheckCertificate(cert, principal, certs)
	}
	return nil
}

// crossCheckCertificate checks that the peer certificate Envoy passes (URL-encoded PEM, when
// include_peer_certificate is set) carries the principal Envoy reported. Envoy verified the
// chain; a mismatch means the attributes cannot be trusted. The certificate's SPIFFE IDs come
// from certs when it was parsed before (nil: parse it).
func crossCheckCertificate(encoded, principal string, certs *peerCerts) error {
	ids, ok := certs.get(encoded)
	if !ok {
		var err error
		if ids, err = certificateIDs(encoded); err != nil {
			return err
		}
		certs.add(encoded, ids)
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

// certificateIDs parses a URL-encoded PEM certificate and returns its SPIFFE IDs (URI SANs of
// scheme spiffe).
func certificateIDs(encoded string) ([]string, error) {
	raw, err := url.QueryUnescape(encoded)
	if err != nil {
		return nil, bad("the peer certificate is not URL-encoded PEM")
	}
	block, _ := pem.Decode([]byte(raw))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, bad("the peer certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, bad("the peer certificate does not parse")
	}
	var ids []string
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ids = append(ids, u.String())
		}
	}
	return ids, nil
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

// headerLists builds the header lists from Envoy's header_map form (encode_raw_headers, which
// the translator sets): one entry per header line, so a header sent twice keeps both values.
// The values of headers sent once share one array, and the raw values one string: a Check
// costs a handful of allocations for its headers, not one per header.
func headerLists(hs []*corev3.HeaderValue) map[string][]string {
	m := make(map[string][]string, len(hs))
	vals := make([]string, len(hs))
	var raw strings.Builder
	n := 0
	for _, h := range hs {
		n += len(h.GetRawValue())
	}
	raw.Grow(n)
	for _, h := range hs {
		raw.Write(h.GetRawValue())
	}
	all, off := raw.String(), 0
	for i, h := range hs {
		k := lowerASCII(h.GetKey())
		if r := h.GetRawValue(); len(r) > 0 {
			vals[i], off = all[off:off+len(r)], off+len(r)
		} else {
			vals[i] = h.GetValue()
		}
		if prev, ok := m[k]; ok {
			m[k] = append(prev[:len(prev):len(prev)], vals[i])
			continue
		}
		m[k] = vals[i : i+1 : i+1]
	}
	return m
}

// headerValue is an entry's value: raw_value with encode_raw_headers, value otherwise.
func headerValue(h *corev3.HeaderValue) string {
	if raw := h.GetRawValue(); len(raw) > 0 {
		return string(raw)
	}
	return h.GetValue()
}

// joinedHeaders reads Envoy's plain headers map, where a header sent twice is one value joined
// with ",": the separate values are lost, so each header has its one (joined) value. Proxies the
// translator configured send header_map instead.
func joinedHeaders(hs map[string]string) map[string][]string {
	m := make(map[string][]string, len(hs))
	vals := make([]string, 0, len(hs))
	for k, v := range hs {
		vals = append(vals, v)
		m[lowerASCII(k)] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return m
}

// lowerASCII lower-cases the ASCII letters of a header name, allocating only when it has one
// in upper case; other bytes are kept as they are (strings.ToLower would replace bytes that are
// not UTF-8).
func lowerASCII(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' })
	if i < 0 {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
