package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/jwt"
)

// Attributes are what a decision is made on. The server builds them from Envoy's CheckRequest;
// the authoring tools from YAML. Field names follow the attribute paths (model.AttributePaths):
// source.principal is Source.Principal, and so on.
type Attributes struct {
	Source      Source
	Destination Destination
	Request     Request
	// JWT is the verified end-user token, nil when the request carried none.
	JWT *jwt.Token
	// APIKey is the verified API key, nil when the request carried none.
	APIKey *apikey.Key
}

// Source is the calling workload.
type Source struct {
	// Principal is the caller's SPIFFE ID from its certificate; "" for an unauthenticated peer.
	Principal string
	// TrustDomain, Namespace and ServiceAccount are parts of Principal (set by SetPrincipal);
	// Namespace and ServiceAccount are "" unless it is a spiffe://td/ns/<ns>/sa/<sa> ID.
	TrustDomain    string
	Namespace      string
	ServiceAccount string
	// Address is the IP of the direct peer; invalid when unknown.
	Address netip.Addr
	Port    uint32
}

// Destination is the service being called.
type Destination struct {
	Service   string
	Namespace string
	// Principal is the SPIFFE ID of the destination workload (its own certificate).
	Principal string
	// Port is the destination service port (see model.Operation.Ports).
	Port uint32
}

// Request is the HTTP request.
type Request struct {
	// ID is the x-request-id Envoy assigned, for logs.
	ID     string
	Method string
	// Path is normalised (NormalizePath): decoded once, no dot segments, no empty segments.
	Path string
	// Query is the raw query string, without "?".
	Query string
	// Host is the authority, lower case, without port.
	Host     string
	Scheme   string
	Protocol string
	SNI      string
	// Headers have lower-case names and every value as received, in order: a header sent twice
	// has two values, never one joined with ",", so that a condition sees each value the
	// application may read (docs/policies.md). Nobody may modify the map or its slices.
	Headers map[string][]string
	Time    time.Time
}

// SetPrincipal sets Source.Principal and the parts derived from it. A principal that is not a
// SPIFFE ID (Envoy falls back to a DNS SAN or the subject) leaves the source unauthenticated:
// policies name workloads only by SPIFFE ID.
func (s *Source) SetPrincipal(principal string) error {
	s.Principal, s.TrustDomain, s.Namespace, s.ServiceAccount = "", "", "", ""
	if principal == "" {
		return nil
	}
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return errors.New("source principal is not a SPIFFE ID")
	}
	s.Principal, s.TrustDomain = id.String(), id.TrustDomain().Name()
	s.Namespace, s.ServiceAccount = workloadParts(id.Path())
	return nil
}

// workloadParts splits "/ns/<namespace>/sa/<account>" (model.WorkloadID's path) without
// allocating; other paths have no parts.
func workloadParts(path string) (namespace, account string) {
	rest, ok := strings.CutPrefix(path, "/ns/")
	if !ok {
		return "", ""
	}
	ns, rest, ok := strings.Cut(rest, "/")
	if !ok || ns == "" {
		return "", ""
	}
	sa, ok := strings.CutPrefix(rest, "sa/")
	if !ok || sa == "" || strings.Contains(sa, "/") {
		return "", ""
	}
	return ns, sa
}

// HostWithoutPort lower-cases an authority and removes its port ("Example.com:8080" →
// "example.com", "[::1]:80" → "::1").
func HostWithoutPort(authority string) string {
	h := authority
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[1:i]
		}
	} else if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// maxMethodLen bounds a method; the longest registered one (UPDATEREDIRECTREF) has 17 bytes.
const maxMethodLen = 32

// CheckMethod refuses a method that is not canonical: an RFC 9110 token without lower-case
// letters. Methods are case-sensitive and every registered one is upper case; Envoy's HTTP/1.1
// codec already refuses "delete", but HTTP/2 carries ":method: delete" through, and frameworks
// that upper-case it run the DELETE handler while a policy on DELETE does not match. Refusing
// (400) rather than folding keeps the request the policy decides and the one the application
// reads the same, whatever the application makes of case.
func CheckMethod(m string) error {
	if m == "" {
		return errors.New("the method is empty")
	}
	if len(m) > maxMethodLen {
		return fmt.Errorf("the method is longer than %d bytes", maxMethodLen)
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case c >= 'a' && c <= 'z':
			return fmt.Errorf("the method %q is not upper case (methods are case-sensitive; %q is a different, unknown method)", m, strings.ToUpper(m))
		case !isTokenChar(c):
			return fmt.Errorf("the method %q is not an HTTP token", m)
		}
	}
	return nil
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Errors of NormalizePath; the server answers 400 with them.
var (
	ErrPathEmpty     = errors.New("path is empty")
	ErrPathRelative  = errors.New("path does not start with \"/\"")
	ErrPathEncoding  = errors.New("path has an invalid percent-encoding")
	ErrPathForbidden = errors.New("path contains a backslash, NUL or control character")
	ErrPathUTF8      = errors.New("path is not valid UTF-8 once decoded")
	ErrPathDotParams = errors.New("path has a dot segment with parameters (\"..;\" or \".;\")")
)

// NormalizePath splits a request target into a normalised path and the raw query, so policies
// match what the application will serve, not a spelling of it:
//
//   - the query ("?..." ) is split off and a fragment ("#...") dropped;
//   - percent-encoding is decoded exactly once ("%2e%2e" is "..", "%252e" stays "%2e");
//   - "." segments are removed and ".." removes the previous segment (never above "/");
//   - empty segments are merged ("//" is "/");
//   - a trailing "/" is kept ("/api/" is not "/api");
//   - backslashes, NUL and control characters, raw or encoded, are refused: servers disagree on
//     what they mean, so no answer is safe;
//   - so are bytes that are not UTF-8 once decoded ("%c0%ae" is an overlong "." to some
//     decoders) and dot segments with parameters ("/..;/", which Tomcat and Jetty resolve as
//     "..").
//
// The asterisk-form "*" (OPTIONS *) is returned as is.
func NormalizePath(target string) (path, query string, err error) {
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target, query = target[:i], target[i+1:]
	}
	switch {
	case target == "":
		return "", "", ErrPathEmpty
	case target == "*":
		return "*", query, nil
	case target[0] != '/':
		return "", "", ErrPathRelative
	}
	if fast := cleanASCII(target); fast {
		return target, query, nil
	}
	decoded, err := decodeOnce(target)
	if err != nil {
		return "", "", err
	}
	if !utf8.ValidString(decoded) {
		return "", "", ErrPathUTF8
	}
	if hasDotParams(decoded) {
		return "", "", ErrPathDotParams
	}
	return removeDotSegments(decoded), query, nil
}

// cleanASCII reports whether p needs no work: ASCII, no "%" or ";", no dot or empty segments,
// no forbidden bytes. Most requests take this path, which does not allocate.
func cleanASCII(p string) bool {
	prevSlash := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%' || c == ';' || c == '\\' || c < 0x20 || c >= 0x7f:
			return false
		case c == '/':
			if prevSlash {
				return false
			}
			prevSlash = true
		case c == '.' && prevSlash:
			// "/." or "/.." followed by "/" or the end is a dot segment.
			j := i + 1
			if j < len(p) && p[j] == '.' {
				j++
			}
			if j == len(p) || p[j] == '/' {
				return false
			}
			prevSlash = false
		default:
			prevSlash = false
		}
	}
	return true
}

func decodeOnce(p string) (string, error) {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", ErrPathEncoding
			}
			c = unhex(p[i+1])<<4 | unhex(p[i+2])
			i += 2
		}
		if c == '\\' || c < 0x20 || c == 0x7f {
			return "", ErrPathForbidden
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// hasDotParams reports whether a segment of p is "." or ".." followed by ";" parameters.
func hasDotParams(p string) bool {
	for rest := p; rest != ""; {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		if base, _, ok := strings.Cut(seg, ";"); ok && (base == "." || base == "..") {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// removeDotSegments resolves "." and ".." and merges empty segments of an absolute path
// (RFC 3986 §5.2.4, plus slash merging), keeping a trailing slash.
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "", ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	res := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		res += "/"
	}
	return res
}
