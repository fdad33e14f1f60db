package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/policy/internal/pattern"
)

// apiKeyCond is from.apiKey: a verified API key, from one of the providers when any are named
// (else from a provider of the destination's namespace or the root namespace), of one of the
// identities when any are named, whose attributes all hold.
type apiKeyCond struct {
	providers     []string // namespace/name
	rootNamespace string
	identities    []string
	attributes    []*valueCond
}

func (c *apiKeyCond) match(a *Attributes) bool {
	if a.APIKey == nil || !c.providerOK(a.APIKey, a.Destination.Namespace) {
		return false
	}
	if len(c.identities) > 0 && !slices.Contains(c.identities, a.APIKey.Identity) {
		return false
	}
	for _, at := range c.attributes {
		if !at.match(a) {
			return false
		}
	}
	return true
}

// providerOK is checked again although the verifier only asks the destination's providers, so
// no key of another tenant's provider meets the requirement, whatever hands the engine its
// attributes (as jwtCond does).
func (c *apiKeyCond) providerOK(k *apikey.Key, dest string) bool {
	if len(c.providers) == 0 {
		ns, _, _ := strings.Cut(k.Provider, "/")
		return ns == dest || ns == c.rootNamespace
	}
	return slices.Contains(c.providers, k.Provider)
}

func (c *apiKeyCond) field() string { return "from.apiKey" }
func (c *apiKeyCond) cost() int     { return costJWT }
func (c *apiKeyCond) explain(a *Attributes) string {
	k := a.APIKey
	switch {
	case k == nil:
		return "the request has no verified API key"
	case !c.providerOK(k, a.Destination.Namespace) && len(c.providers) == 0:
		return fmt.Sprintf("the API key %q was verified by %s, not by a provider of namespace %q or the root namespace %q", k.ID, k.Provider, a.Destination.Namespace, c.rootNamespace)
	case !c.providerOK(k, a.Destination.Namespace):
		return fmt.Sprintf("the API key %q was verified by %s, not by %s", k.ID, k.Provider, strings.Join(c.providers, " or "))
	case len(c.identities) > 0 && !slices.Contains(c.identities, k.Identity):
		return fmt.Sprintf("apiKey.identity %q is not one of %v", k.Identity, c.identities)
	}
	for _, at := range c.attributes {
		if !at.match(a) {
			return at.explain(a)
		}
	}
	return ""
}

// apiKeyAttribute reads an attribute of the verified key: always a list, so equals and in test
// each value and contains tests membership.
func apiKeyAttribute(name string) getter {
	return func(a *Attributes) pattern.Value {
		if a.APIKey == nil {
			return pattern.Value{}
		}
		vals, ok := a.APIKey.Attributes[name]
		if !ok {
			return pattern.Value{}
		}
		return pattern.Value{Many: vals, List: true, OK: true}
	}
}

// apiKeyField reads a single-valued field of the verified key.
func apiKeyField(f func(k *apikey.Key) string) getter {
	return func(a *Attributes) pattern.Value {
		if a.APIKey == nil {
			return pattern.Value{}
		}
		return str(f(a.APIKey))
	}
}
