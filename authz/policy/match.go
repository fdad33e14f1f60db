package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// cond is one compiled part of a rule. Rules test their conds in order of cost and stop at the
// first that fails; explain reports the field and why, for `portcullis policy explain`.
type cond interface {
	match(a *Attributes) bool
	field() string
	explain(a *Attributes) string
	cost() int
}

// Costs order a rule's conds: cheap set lookups first, regular expressions and time zones last.
const (
	costSet = iota
	costString
	costGlob
	costJWT
	costValue
	costRegexp
)

// stringSet is a set of strings: a slice for the few entries policies usually list, a map
// beyond that.
type stringSet struct {
	list []string
	m    map[string]struct{}
}

func newStringSet(vals []string) stringSet {
	s := stringSet{list: vals}
	if len(vals) > 8 {
		s.m = make(map[string]struct{}, len(vals))
		for _, v := range vals {
			s.m[v] = struct{}{}
		}
	}
	return s
}

func (s *stringSet) has(v string) bool {
	if s.m != nil {
		_, ok := s.m[v]
		return ok
	}
	return slices.Contains(s.list, v)
}

func (s *stringSet) String() string { return fmt.Sprint(s.list) }

// --- from.principals / from.notPrincipals

type principalPattern struct {
	raw            string
	any            bool // "*": any authenticated workload
	prefix, suffix string
	exact          string
}

func compilePrincipal(p string) principalPattern {
	switch {
	case p == "*":
		return principalPattern{raw: p, any: true}
	case strings.HasPrefix(p, "*"):
		return principalPattern{raw: p, suffix: p[1:]}
	case strings.HasSuffix(p, "*"):
		return principalPattern{raw: p, prefix: p[:len(p)-1]}
	}
	return principalPattern{raw: p, exact: p}
}

func (p *principalPattern) match(s string) bool {
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

type principalsCond struct {
	name     string
	patterns []principalPattern
	not      bool
}

func (c *principalsCond) matchAny(s string) bool {
	for i := range c.patterns {
		if c.patterns[i].match(s) {
			return true
		}
	}
	return false
}

func (c *principalsCond) match(a *Attributes) bool { return c.matchAny(a.Source.Principal) != c.not }
func (c *principalsCond) field() string            { return "from." + c.name }
func (c *principalsCond) cost() int                { return costString }
func (c *principalsCond) explain(a *Attributes) string {
	raw := make([]string, len(c.patterns))
	for i, p := range c.patterns {
		raw[i] = p.raw
	}
	switch {
	case c.not:
		return fmt.Sprintf("source.principal %q matches one of %v", a.Source.Principal, raw)
	case a.Source.Principal == "":
		return "the caller is not authenticated (no SPIFFE ID)"
	}
	return fmt.Sprintf("source.principal %q matches none of %v", a.Source.Principal, raw)
}

// --- set membership of one attribute: namespaces, methods, ports

type setCond struct {
	fieldName string
	attr      string
	get       func(a *Attributes) string
	set       stringSet
	not       bool
}

func (c *setCond) match(a *Attributes) bool {
	v := c.get(a)
	return (v != "" && c.set.has(v)) != c.not
}
func (c *setCond) field() string { return c.fieldName }
func (c *setCond) cost() int     { return costSet }
func (c *setCond) explain(a *Attributes) string {
	v := c.get(a)
	if c.not {
		return fmt.Sprintf("%s %q is one of %s", c.attr, v, c.set.String())
	}
	if v == "" {
		return fmt.Sprintf("%s is empty", c.attr)
	}
	return fmt.Sprintf("%s %q is not one of %s", c.attr, v, c.set.String())
}

type portsCond struct{ ports []uint32 }

func (c *portsCond) match(a *Attributes) bool { return slices.Contains(c.ports, a.Destination.Port) }
func (c *portsCond) field() string            { return "to.ports" }
func (c *portsCond) cost() int                { return costSet }
func (c *portsCond) explain(a *Attributes) string {
	return fmt.Sprintf("destination.port %d is not one of %v", a.Destination.Port, c.ports)
}

// --- to.paths / to.notPaths

type pathKind int

const (
	pathExact pathKind = iota
	pathPrefix
	pathGlob
)

type pathPattern struct {
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

func compilePath(p string) pathPattern {
	switch {
	case !strings.Contains(p, "*"):
		return pathPattern{raw: p, kind: pathExact}
	case strings.HasSuffix(p, "/*") && strings.Count(p, "*") == 1:
		return pathPattern{raw: p, kind: pathPrefix, prefix: p[:len(p)-1]}
	}
	pp := pathPattern{raw: p, kind: pathGlob}
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

func (p *pathPattern) match(path string) bool {
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

type pathsCond struct {
	patterns []pathPattern
	not      bool
}

func (c *pathsCond) match(a *Attributes) bool {
	for i := range c.patterns {
		if c.patterns[i].match(a.Request.Path) {
			return !c.not
		}
	}
	return c.not
}

func (c *pathsCond) field() string {
	if c.not {
		return "to.notPaths"
	}
	return "to.paths"
}
func (c *pathsCond) cost() int { return costGlob }
func (c *pathsCond) explain(a *Attributes) string {
	raw := make([]string, len(c.patterns))
	for i, p := range c.patterns {
		raw[i] = p.raw
	}
	if c.not {
		return fmt.Sprintf("request.path %q matches one of %v", a.Request.Path, raw)
	}
	return fmt.Sprintf("request.path %q matches none of %v", a.Request.Path, raw)
}

// --- to.hosts

type hostPattern struct {
	raw            string
	exact          string
	suffix, prefix string
}

func compileHost(h string) hostPattern {
	h = strings.ToLower(h)
	switch {
	case strings.HasPrefix(h, "*."):
		return hostPattern{raw: h, suffix: h[1:]}
	case strings.HasSuffix(h, ".*"):
		return hostPattern{raw: h, prefix: h[:len(h)-1]}
	}
	return hostPattern{raw: h, exact: h}
}

func (p *hostPattern) match(h string) bool {
	switch {
	case p.exact != "":
		return h == p.exact
	case p.suffix != "":
		return len(h) > len(p.suffix) && strings.HasSuffix(h, p.suffix)
	}
	return len(h) > len(p.prefix) && strings.HasPrefix(h, p.prefix)
}

type hostsCond struct{ patterns []hostPattern }

func (c *hostsCond) match(a *Attributes) bool {
	for i := range c.patterns {
		if c.patterns[i].match(a.Request.Host) {
			return true
		}
	}
	return false
}
func (c *hostsCond) field() string { return "to.hosts" }
func (c *hostsCond) cost() int     { return costString }
func (c *hostsCond) explain(a *Attributes) string {
	raw := make([]string, len(c.patterns))
	for i, p := range c.patterns {
		raw[i] = p.raw
	}
	return fmt.Sprintf("request.host %q matches none of %v", a.Request.Host, raw)
}

// --- when: sourceIPs / notSourceIPs

type ipCond struct {
	path     string
	prefixes []netip.Prefix
	not      bool
}

func compileCIDRs(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, err
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (c *ipCond) match(a *Attributes) bool {
	addr := a.Source.Address.Unmap()
	in := false
	if addr.IsValid() {
		for _, p := range c.prefixes {
			if p.Contains(addr) {
				in = true
				break
			}
		}
	}
	return in != c.not
}
func (c *ipCond) field() string { return c.path }
func (c *ipCond) cost() int     { return costSet }
func (c *ipCond) explain(a *Attributes) string {
	if c.not {
		return fmt.Sprintf("source.address %s is in %v", a.Source.Address, c.prefixes)
	}
	if !a.Source.Address.IsValid() {
		return "source.address is unknown"
	}
	return fmt.Sprintf("source.address %s is not in %v", a.Source.Address, c.prefixes)
}

// --- when: time window

type timeCond struct {
	path       string
	loc        *time.Location
	days       [7]bool
	start, end int // minutes after midnight; end may be 1440
	raw        string
}

func compileTime(w *model.TimeWindow, path string) (*timeCond, error) {
	c := &timeCond{path: path, loc: time.UTC}
	if w.TimeZone != "" {
		loc, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", w.TimeZone, err)
		}
		c.loc = loc
	}
	for i := range c.days {
		c.days[i] = len(w.Days) == 0
	}
	for _, d := range w.Days {
		c.days[model.Weekdays[d]] = true
	}
	var ok bool
	if c.start, ok = model.ParseClock(w.Start); !ok {
		return nil, fmt.Errorf("start %q", w.Start)
	}
	if w.End == "24:00" {
		c.end = 24 * 60
	} else if c.end, ok = model.ParseClock(w.End); !ok {
		return nil, fmt.Errorf("end %q", w.End)
	}
	days := "every day"
	if len(w.Days) > 0 {
		days = strings.Join(w.Days, ",")
	}
	c.raw = fmt.Sprintf("%s-%s %s %s", w.Start, w.End, days, c.loc)
	return c, nil
}

func (c *timeCond) match(a *Attributes) bool {
	if a.Request.Time.IsZero() {
		return false
	}
	t := a.Request.Time.In(c.loc)
	m := t.Hour()*60 + t.Minute()
	wd := t.Weekday()
	if c.start < c.end {
		return c.days[wd] && m >= c.start && m < c.end
	}
	// The window wraps past midnight and belongs to the day it starts on.
	return (c.days[wd] && m >= c.start) || (c.days[(wd+6)%7] && m < c.end)
}
func (c *timeCond) field() string { return c.path }
func (c *timeCond) cost() int     { return costRegexp }
func (c *timeCond) explain(a *Attributes) string {
	if a.Request.Time.IsZero() {
		return "request.time is unknown"
	}
	return fmt.Sprintf("request.time %s (%s) is outside %s", a.Request.Time.In(c.loc).Format("Mon 15:04"), c.loc, c.raw)
}

// portString formats a port without allocating for the common small ones.
func portString(p uint32) string {
	if p == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(p), 10)
}
