package policy

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/portcullis/portcullis/authz/policy/internal/pattern"
)

// cond is one compiled part of a rule: a pattern and the attribute it reads. Rules test their
// conds in order of cost and stop at the first that fails; explain says why one failed, for
// Trace.
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

// principalsCond is from.principals or from.notPrincipals.
type principalsCond struct {
	name     string
	patterns pattern.Principals
	not      bool
}

func (c *principalsCond) match(a *Attributes) bool {
	return c.patterns.Match(a.Source.Principal) != c.not
}
func (c *principalsCond) field() string { return "from." + c.name }
func (c *principalsCond) cost() int     { return costString }
func (c *principalsCond) explain(a *Attributes) string {
	switch {
	case c.not:
		return fmt.Sprintf("source.principal %q matches one of %v", a.Source.Principal, c.patterns.Raw())
	case a.Source.Principal == "":
		return "the caller is not authenticated (no SPIFFE ID)"
	}
	return fmt.Sprintf("source.principal %q matches none of %v", a.Source.Principal, c.patterns.Raw())
}

// setCond is set membership of one attribute: namespaces, methods.
type setCond struct {
	fieldName string
	attr      string
	get       func(a *Attributes) string
	set       pattern.Set
	not       bool
}

func (c *setCond) match(a *Attributes) bool {
	v := c.get(a)
	return (v != "" && c.set.Has(v)) != c.not
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

// pathsCond is to.paths or to.notPaths.
type pathsCond struct {
	patterns pattern.Paths
	not      bool
}

func (c *pathsCond) match(a *Attributes) bool { return c.patterns.Match(a.Request.Path) != c.not }
func (c *pathsCond) field() string {
	if c.not {
		return "to.notPaths"
	}
	return "to.paths"
}
func (c *pathsCond) cost() int { return costGlob }
func (c *pathsCond) explain(a *Attributes) string {
	if c.not {
		return fmt.Sprintf("request.path %q matches one of %v", a.Request.Path, c.patterns.Raw())
	}
	return fmt.Sprintf("request.path %q matches none of %v", a.Request.Path, c.patterns.Raw())
}

type hostsCond struct{ patterns pattern.Hosts }

func (c *hostsCond) match(a *Attributes) bool { return c.patterns.Match(a.Request.Host) }
func (c *hostsCond) field() string            { return "to.hosts" }
func (c *hostsCond) cost() int                { return costString }
func (c *hostsCond) explain(a *Attributes) string {
	return fmt.Sprintf("request.host %q matches none of %v", a.Request.Host, c.patterns.Raw())
}

// ipCond is when.sourceIPs or when.notSourceIPs.
type ipCond struct {
	path     string
	prefixes pattern.Addresses
	not      bool
}

func (c *ipCond) match(a *Attributes) bool { return c.prefixes.Contains(a.Source.Address) != c.not }
func (c *ipCond) field() string            { return c.path }
func (c *ipCond) cost() int                { return costSet }
func (c *ipCond) explain(a *Attributes) string {
	if c.not {
		return fmt.Sprintf("source.address %s is in %v", a.Source.Address, c.prefixes)
	}
	if !a.Source.Address.IsValid() {
		return "source.address is unknown"
	}
	return fmt.Sprintf("source.address %s is not in %v", a.Source.Address, c.prefixes)
}

// timeCond is when.time.
type timeCond struct {
	path   string
	window *pattern.TimeWindow
}

func (c *timeCond) match(a *Attributes) bool { return c.window.Match(a.Request.Time) }
func (c *timeCond) field() string            { return c.path }
func (c *timeCond) cost() int                { return costRegexp }
func (c *timeCond) explain(a *Attributes) string {
	if a.Request.Time.IsZero() {
		return "request.time is unknown"
	}
	loc := c.window.Location()
	return fmt.Sprintf("request.time %s (%s) is outside %s", a.Request.Time.In(loc).Format("Mon 15:04"), loc, c.window)
}

// valueCond tests one attribute (or claim) with one operator.
type valueCond struct {
	path string // field path in the rule, for explanations
	attr string // attribute path
	get  getter
	op   pattern.Operator
}

func (c *valueCond) match(a *Attributes) bool { return c.op.Test(c.get(a)) }
func (c *valueCond) field() string            { return c.path }
func (c *valueCond) cost() int {
	if c.op.IsRegexp() {
		return costRegexp
	}
	return costValue
}
func (c *valueCond) explain(a *Attributes) string {
	return fmt.Sprintf("%s is %s, which does not satisfy %s", c.attr, c.get(a), c.op.String())
}

// portString formats a port without allocating for the common small ones.
func portString(p uint32) string {
	if p == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(p), 10)
}

var (
	_ cond = (*principalsCond)(nil)
	_ cond = (*setCond)(nil)
	_ cond = (*portsCond)(nil)
	_ cond = (*pathsCond)(nil)
	_ cond = (*hostsCond)(nil)
	_ cond = (*ipCond)(nil)
	_ cond = (*timeCond)(nil)
	_ cond = (*valueCond)(nil)
	_ cond = (*jwtCond)(nil)
	_ cond = (*apiKeyCond)(nil)
)
