package pattern

import "strings"

type pathKind int

const (
	pathExact pathKind = iota
	pathPrefix
	pathGlob
)

// Path is a to.paths entry: an exact path, a prefix ("/api/*": anything below /api/), or a glob
// of segments ("*" one segment, "**" any number, "*" inside a segment any characters but "/").
type Path struct {
	raw    string
	kind   pathKind
	prefix string
	segs   []segment
}

// segment is one segment of a glob: literal, "*" (one segment), "**" (any number), or a
// literal with "*" wildcards inside.
type segment struct {
	lit      string
	anyDepth bool
	wild     []string // literal parts between "*" when the segment has wildcards
}

// ParsePath compiles a path pattern (validated by the model).
func ParsePath(p string) Path {
	switch {
	case !strings.Contains(p, "*"):
		return Path{raw: p, kind: pathExact}
	case strings.HasSuffix(p, "/*") && strings.Count(p, "*") == 1:
		return Path{raw: p, kind: pathPrefix, prefix: p[:len(p)-1]}
	}
	pp := Path{raw: p, kind: pathGlob}
	for _, s := range strings.Split(p[1:], "/") {
		switch {
		case s == "**":
			pp.segs = append(pp.segs, segment{anyDepth: true})
		case strings.Contains(s, "*"):
			pp.segs = append(pp.segs, segment{wild: strings.Split(s, "*")})
		default:
			pp.segs = append(pp.segs, segment{lit: s})
		}
	}
	return pp
}

// Match reports whether a normalised request path matches.
func (p *Path) Match(path string) bool {
	switch p.kind {
	case pathExact:
		return path == p.raw
	case pathPrefix:
		return strings.HasPrefix(path, p.prefix)
	}
	if path == "" || path[0] != '/' {
		return false
	}
	return matchSegments(p.segs, path[1:], false)
}

// matchSegments matches the segments of rest (a path after a "/"; done when none are left)
// against a glob, without allocating.
func matchSegments(pat []segment, rest string, done bool) bool {
	for i, s := range pat {
		if s.anyDepth {
			if i == len(pat)-1 {
				return true
			}
			for {
				if matchSegments(pat[i+1:], rest, done) {
					return true
				}
				if done {
					return false
				}
				_, rest, done = nextSegment(rest)
			}
		}
		if done {
			return false
		}
		var cur string
		cur, rest, done = nextSegment(rest)
		if !s.match(cur) {
			return false
		}
	}
	return done
}

func nextSegment(p string) (seg, rest string, done bool) {
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:], false
	}
	return p, "", true
}

func (s *segment) match(seg string) bool {
	if s.wild == nil {
		return seg == s.lit
	}
	if s.lit == "" && len(s.wild) == 2 && s.wild[0] == "" && s.wild[1] == "" {
		return seg != "" // "*": one non-empty segment
	}
	return wildcard(s.wild, seg)
}

// wildcard matches s against parts separated by "*" (parts[0] is a prefix, the last a suffix).
func wildcard(parts []string, s string) bool {
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// Paths is a list of path patterns; any may match.
type Paths []Path

// ParsePaths compiles a list of path patterns.
func ParsePaths(list []string) Paths {
	out := make(Paths, len(list))
	for i, p := range list {
		out[i] = ParsePath(p)
	}
	return out
}

// Match reports whether any pattern matches path.
func (ps Paths) Match(path string) bool {
	for i := range ps {
		if ps[i].Match(path) {
			return true
		}
	}
	return false
}

// Raw returns the patterns as written.
func (ps Paths) Raw() []string {
	raw := make([]string, len(ps))
	for i := range ps {
		raw[i] = ps[i].raw
	}
	return raw
}

// Covers reports whether every path pattern p matches is matched by one of ps. It is sound, not
// complete: false may also mean "not known".
func (ps Paths) Covers(p string) bool {
	for i := range ps {
		if ps[i].raw == p {
			return true
		}
	}
	pp := ParsePath(p)
	switch pp.kind {
	case pathExact:
		return ps.Match(p)
	case pathPrefix:
		for _, q := range ps {
			if q.kind == pathPrefix && strings.HasPrefix(pp.prefix, q.prefix) {
				return true
			}
		}
	}
	return false
}
