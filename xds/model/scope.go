package model

import (
	"fmt"
	"slices"
	"strings"
)

// RootNamespace returns the namespace of the mesh-wide documents: the Mesh's spec.rootNamespace,
// or DefaultRootNamespace.
func (m *Mesh) RootNamespace() string {
	if m.Config != nil && m.Config.Spec.RootNamespace != "" {
		return m.Config.Spec.RootNamespace
	}
	return DefaultRootNamespace
}

// Reaches reports whether a document of namespace ns that names no service — an
// AuthorizationPolicy without a selector, a JWTProvider — applies to requests for destinations
// in namespace dest: those of its own namespace, and every one when ns is the root namespace.
// A tenant's documents never govern another tenant's services (Istio's model).
func (m *Mesh) Reaches(ns, dest string) bool {
	return ns == dest || ns == m.RootNamespace()
}

// JWTProvider returns the provider a policy of namespace ns names: the one called name in ns,
// else the one in the root namespace; nil when neither exists.
func (m *Mesh) JWTProvider(ns, name string) *JWTProviderDoc {
	var found *JWTProviderDoc
	resolveProvider(ns, m.RootNamespace(), name, func(r Ref) bool {
		i, ok := slices.BinarySearchFunc(m.JWTProviders, r, func(p *JWTProviderDoc, r Ref) int { return compareRef(RefOf(p), r) })
		if ok {
			found = m.JWTProviders[i]
		}
		return ok
	})
	return found
}

// resolveProvider is the one rule by which a from.jwt or from.apiKey providers name is found, for Build
// (which has no Mesh yet) and for JWTProvider.
func resolveProvider(ns, root, name string, exists func(Ref) bool) (Ref, bool) {
	for _, r := range []Ref{{ns, name}, {root, name}} {
		if exists(r) {
			return r, true
		}
	}
	return Ref{}, false
}

// ReachWarnings lists the documents whose reach changed when documents became scoped to their
// namespace: an AuthorizationPolicy without a selector outside the root namespace (it used to
// apply to every namespace), a JWTProvider outside it (it used to verify tokens for every
// destination), and a from.jwt naming no providers where providers of other namespaces exist
// (it used to accept their tokens). Each is reported only when the mesh has services the old
// reach covered and the new one does not, and only while the Mesh does not set
// spec.rootNamespace: a Mesh that names its root namespace was written, or reviewed, for these
// rules. They are warnings, never errors: the documents are valid and their new reach is the
// safe one, and refusing them would freeze (or, on a fresh start, withhold) a mesh the
// Kubernetes API server has already accepted.
func (m *Mesh) ReachWarnings() Problems {
	if m.Config == nil || m.Config.Spec.RootNamespace != "" {
		return nil
	}
	root := m.RootNamespace()
	serviceNamespaces := map[string]bool{}
	for _, s := range m.Services {
		serviceNamespaces[RefOf(s).Namespace] = true
	}
	// elsewhere reports whether services exist outside ns (and the root namespace, whose
	// documents reach them still).
	elsewhere := func(ns string) bool {
		for n := range serviceNamespaces {
			if n != ns && n != root {
				return true
			}
		}
		return false
	}
	// foreignTo lists the providers of neither namespace ns nor the root namespace.
	foreignTo := func(ns string) []string {
		var foreign []string
		for _, p := range m.JWTProviders {
			if pns := RefOf(p).Namespace; pns != ns && pns != root {
				foreign = append(foreign, RefOf(p).String())
			}
		}
		return foreign
	}
	ack := fmt.Sprintf("; set the Mesh's spec.rootNamespace (%q unless set) once reviewed", root)
	var out Problems
	warn := func(o Object, field Path, format string, args ...any) {
		p := m.Problem(o, field, fmt.Sprintf(format, args...)+ack)
		p.Warning = true
		out = append(out, p)
	}
	for _, p := range m.JWTProviders {
		if ns := RefOf(p).Namespace; ns != root && elsewhere(ns) {
			warn(p, "metadata.namespace",
				"this provider now verifies tokens only for destinations in namespace %q (it verified them for every namespace before documents were scoped to their namespace); a provider for the whole mesh belongs in the root namespace %q",
				ns, root)
		}
	}
	for _, pol := range m.AuthorizationPolicies {
		ns := RefOf(pol).Namespace
		if pol.Spec.Selector == nil && ns != root && elsewhere(ns) {
			warn(pol, "spec.selector",
				"without a selector this policy now applies only to namespace %q (it applied to every namespace before documents were scoped to their namespace); to keep it mesh-wide, move it to the root namespace %q",
				ns, root)
		}
		for i, r := range pol.Spec.Rules {
			if r.From == nil || r.From.JWT == nil || len(r.From.JWT.Providers) > 0 {
				continue
			}
			if f := foreignTo(ns); len(f) > 0 {
				warn(pol, Path("spec.rules").Index(i).Field("from.jwt"),
					"naming no providers, this requirement now accepts only tokens verified by JWTProviders of the destination's namespace or the root namespace %q: tokens of %s no longer count at destinations outside their namespace",
					root, strings.Join(f, ", "))
			}
		}
	}
	out.Sort()
	return out
}
