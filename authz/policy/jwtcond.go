package policy

import (
	"fmt"
	"strings"
)

// jwtCond is from.jwt: a verified token, from one of the providers when any are named, whose
// claims all hold.
type jwtCond struct {
	providers []string // namespace/name
	claims    []*valueCond
}

func (c *jwtCond) match(a *Attributes) bool {
	if a.JWT == nil || !c.providerOK(a) {
		return false
	}
	for _, cl := range c.claims {
		if !cl.match(a) {
			return false
		}
	}
	return true
}

func (c *jwtCond) providerOK(a *Attributes) bool {
	if len(c.providers) == 0 {
		return true
	}
	for _, p := range c.providers {
		if a.JWT.VerifiedBy(p) {
			return true
		}
	}
	return false
}

func (c *jwtCond) field() string { return "from.jwt" }
func (c *jwtCond) cost() int     { return costJWT }
func (c *jwtCond) explain(a *Attributes) string {
	switch {
	case a.JWT == nil:
		return "the request has no verified JWT"
	case !c.providerOK(a):
		return fmt.Sprintf("the JWT was verified by %s, not by %s", strings.Join(a.JWT.Providers, ", "), strings.Join(c.providers, " or "))
	}
	for _, cl := range c.claims {
		if !cl.match(a) {
			return cl.explain(a)
		}
	}
	return ""
}
