package pattern

import "strings"

// Host is a to.hosts entry: an exact host, "*.suffix" or "prefix.*", compared in lower case.
type Host struct {
	raw            string
	exact          string
	suffix, prefix string
}

// ParseHost compiles a host pattern.
func ParseHost(h string) Host {
	h = strings.ToLower(h)
	switch {
	case strings.HasPrefix(h, "*."):
		return Host{raw: h, suffix: h[1:]}
	case strings.HasSuffix(h, ".*"):
		return Host{raw: h, prefix: h[:len(h)-1]}
	}
	return Host{raw: h, exact: h}
}

// Match reports whether a lower-case host without port matches; a wildcard stands for at least
// one character.
func (p *Host) Match(h string) bool {
	switch {
	case p.exact != "":
		return h == p.exact
	case p.suffix != "":
		return len(h) > len(p.suffix) && strings.HasSuffix(h, p.suffix)
	}
	return len(h) > len(p.prefix) && strings.HasPrefix(h, p.prefix)
}

// Hosts is a list of host patterns; any may match.
type Hosts []Host

// ParseHosts compiles a list of host patterns.
func ParseHosts(list []string) Hosts {
	out := make(Hosts, len(list))
	for i, h := range list {
		out[i] = ParseHost(h)
	}
	return out
}

// Match reports whether any pattern matches h.
func (hs Hosts) Match(h string) bool {
	for i := range hs {
		if hs[i].Match(h) {
			return true
		}
	}
	return false
}

// Raw returns the patterns, lower-cased.
func (hs Hosts) Raw() []string {
	raw := make([]string, len(hs))
	for i := range hs {
		raw[i] = hs[i].raw
	}
	return raw
}
