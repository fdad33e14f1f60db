package policy

import (
	"fmt"
	"strings"
)

// jwtCond is from.jwt: a verified token, from one of the providers when any are named (else
// from a provider of the destination's namespace or the root namespace), whose claims all hold.
type jwtCond struct {
	providers     []string // namespace/name
	rootNamespace string
	claims        []*valueCond
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
		// The verifier only asks these providers; checked again so that no token from another
		// tenant's provider can meet the requirement, whatever hands the engine its attributes.
		for _, p := range a.JWT.Providers {
			if ns, _, _ := strings.Cut(p, "/"); ns == a.Destination.Namespace || ns == c.rootNamespace {
				return true
			}
		}
		return false
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
	case !c.providerOK(a) && len(c.providers) == 0:
		return fmt.Sprintf("the JWT was verified by %s, not by a provider of namespace %q or the root namespace %q", strings.Join(a.JWT.Providers, ", "), a.Destination.Namespace, c.rootNamespace)
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
