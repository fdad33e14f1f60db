package pattern

import "strings"

// Principal is a from.principals entry: "*" (any authenticated workload), "prefix*", "*suffix" or
// an exact SPIFFE ID.
type Principal struct {
	raw            string
	any            bool
	prefix, suffix string
	exact          string
}

// ParsePrincipal compiles a principal pattern (validated by the model).
func ParsePrincipal(p string) Principal {
	switch {
	case p == "*":
		return Principal{raw: p, any: true}
	case strings.HasPrefix(p, "*"):
		return Principal{raw: p, suffix: p[1:]}
	case strings.HasSuffix(p, "*"):
		return Principal{raw: p, prefix: p[:len(p)-1]}
	}
	return Principal{raw: p, exact: p}
}

// Match reports whether a caller's principal matches; "" (unauthenticated) never does.
func (p *Principal) Match(s string) bool {
	switch {
	case s == "":
		return false
	case p.any:
		return true
	case p.exact != "":
		return s == p.exact
	case p.prefix != "":
		return strings.HasPrefix(s, p.prefix)
	}
	return strings.HasSuffix(s, p.suffix)
}

// Principals is a list of principal patterns; any may match.
type Principals []Principal

// ParsePrincipals compiles a list of principal patterns.
func ParsePrincipals(list []string) Principals {
	out := make(Principals, len(list))
	for i, p := range list {
		out[i] = ParsePrincipal(p)
	}
	return out
}

// Match reports whether any pattern matches s.
func (ps Principals) Match(s string) bool {
	for i := range ps {
		if ps[i].Match(s) {
			return true
		}
	}
	return false
}

// Raw returns the patterns as written.
func (ps Principals) Raw() []string {
	raw := make([]string, len(ps))
	for i := range ps {
		raw[i] = ps[i].raw
	}
	return raw
}

// Covers reports whether every principal pattern p matches is matched by one of ps. It is sound,
// not complete: false may also mean "not known".
func (ps Principals) Covers(p string) bool {
	for i := range ps {
		if ps[i].raw == p {
			return true
		}
	}
	pp := ParsePrincipal(p)
	switch {
	case pp.exact != "":
		return ps.Match(pp.exact)
	case pp.prefix != "":
		// A prefix is covered by a shorter (or equal) prefix.
		for _, q := range ps {
			if q.prefix != "" && strings.HasPrefix(pp.prefix, q.prefix) {
				return true
			}
		}
	case pp.suffix != "":
		for _, q := range ps {
			if q.suffix != "" && strings.HasSuffix(pp.suffix, q.suffix) {
				return true
			}
		}
	}
	return false
}
