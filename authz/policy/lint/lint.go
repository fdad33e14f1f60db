package lint

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/policy/internal/pattern"
	"github.com/portcullis/portcullis/xds/model"
)

// Documents checks the AuthorizationPolicy documents among docs beyond their validation: Rego
// modules compile (policy.CheckDocuments), and no rule is one that can never match. It skips
// documents that fail their own validation (validation reports those). m is the mesh docs built
// (nil when they did not), for the checks that need other documents: ports of the selected
// service, and JWTProviders for a from.jwt.
func Documents(docs []model.Document, m *model.Mesh) model.Problems {
	out := policy.CheckDocuments(docs)
	for i := range docs {
		d := &docs[i]
		doc, ok := d.Object.(*model.AuthorizationPolicyDoc)
		if !ok || len(doc.Validate()) > 0 {
			continue
		}
		out = append(out, place(d.Origin, d.FieldLines, doc, lintPolicy(doc, m))...)
	}
	out.Sort()
	return out
}

// Mesh is Documents for the policies of a built mesh.
func Mesh(m *model.Mesh) model.Problems {
	out := policy.Check(m)
	for _, doc := range m.AuthorizationPolicies {
		out = append(out, place(m.Origin(doc), m.FieldLines(doc), doc, lintPolicy(doc, m))...)
	}
	out.Sort()
	return out
}

// finding is a rule that can never match, before it is placed in a file.
type finding struct {
	field   model.Path
	message string
}

func place(o model.Origin, lines map[model.Path]int, doc *model.AuthorizationPolicyDoc, fs []finding) model.Problems {
	out := make(model.Problems, 0, len(fs))
	for _, f := range fs {
		out = append(out, model.ProblemAt(o, lines, doc, f.field, f.message))
	}
	return out
}

const never = "the rule can never match: "

// lintPolicy finds rules that can never match. Each check is sound: it reports only what no
// request can satisfy. m (nil without a mesh) enables the checks that need other documents.
func lintPolicy(doc *model.AuthorizationPolicyDoc, m *model.Mesh) []finding {
	var fs []finding
	ns := model.RefOf(doc).Namespace
	var svc *model.ServiceDoc
	if doc.Spec.Selector != nil && m != nil {
		svc = m.Service(ns, doc.Spec.Selector.Service)
	}
	for i := range doc.Spec.Rules {
		r := &doc.Spec.Rules[i]
		rp := model.Path("spec.rules").Index(i)
		add := func(field string, format string, args ...any) {
			fs = append(fs, finding{field: rp.Field(field), message: never + fmt.Sprintf(format, args...)})
		}
		if f := r.From; f != nil {
			lintFrom(f, add)
			if f.JWT != nil && m != nil && !providerActs(doc, m, m.JWTProviders) {
				add("from.jwt", "no JWTProvider verifies tokens for namespace %q; add one there or in the root namespace %q", ns, m.RootNamespace())
			}
			if f.APIKey != nil && m != nil && !providerActs(doc, m, m.APIKeyProviders) {
				add("from.apiKey", "no APIKeyProvider verifies keys for namespace %q; add one there or in the root namespace %q", ns, m.RootNamespace())
			}
		}
		if t := r.To; t != nil {
			lintTo(t, svc, add)
		}
		lintWhen(r.When, func(k int, format string, args ...any) {
			fs = append(fs, finding{field: rp.Field("when").Index(k), message: never + fmt.Sprintf(format, args...)})
		})
	}
	return fs
}

// providerActs reports whether one of the providers (JWTProviders, APIKeyProviders) verifies
// credentials for a destination the policy applies to: one of its namespace or the root
// namespace's, or any for a root namespace policy without a selector, which applies everywhere.
func providerActs[P model.Object](doc *model.AuthorizationPolicyDoc, m *model.Mesh, providers []P) bool {
	ns, root := model.RefOf(doc).Namespace, m.RootNamespace()
	meshWide := doc.Spec.Selector == nil && ns == root
	return slices.ContainsFunc(providers, func(p P) bool {
		return meshWide || m.Reaches(model.RefOf(p).Namespace, ns)
	})
}

func lintFrom(f *model.Source, add func(field, format string, args ...any)) {
	if len(f.Principals) > 0 && len(f.NotPrincipals) > 0 {
		not := pattern.ParsePrincipals(f.NotPrincipals)
		if slices.Contains(f.NotPrincipals, "*") {
			add("from.notPrincipals", "notPrincipals \"*\" excludes every authenticated caller, and principals match only authenticated ones")
		} else if !slices.ContainsFunc(f.Principals, func(p string) bool { return !not.Covers(p) }) {
			add("from.principals", "every principal listed is excluded by notPrincipals")
		}
	}
	if len(f.Namespaces) > 0 && !slices.ContainsFunc(f.Namespaces, func(n string) bool { return !slices.Contains(f.NotNamespaces, n) }) {
		add("from.namespaces", "every namespace listed is excluded by notNamespaces")
	}
	// Exact workload IDs name their namespace: it must be one the rule allows.
	if len(f.Principals) > 0 && (len(f.Namespaces) > 0 || len(f.NotNamespaces) > 0) {
		possible := false
		for _, p := range f.Principals {
			ns, ok := principalNamespace(p)
			if !ok || ((len(f.Namespaces) == 0 || slices.Contains(f.Namespaces, ns)) && !slices.Contains(f.NotNamespaces, ns)) {
				possible = true
				break
			}
		}
		if !possible {
			add("from.namespaces", "the namespaces of the principals listed are not allowed by namespaces/notNamespaces")
		}
	}
}

// principalNamespace returns the namespace an exact workload ID or a prefix naming a namespace
// ("spiffe://td/ns/x/*") fixes.
func principalNamespace(p string) (string, bool) {
	if !strings.HasPrefix(p, "spiffe://") {
		return "", false
	}
	seg := strings.Split(strings.TrimPrefix(p, "spiffe://"), "/")
	if len(seg) >= 3 && seg[1] == "ns" && seg[2] != "" && !strings.Contains(seg[2], "*") && (len(seg) > 3 || !strings.HasSuffix(p, "*")) {
		return seg[2], true
	}
	return "", false
}

func lintTo(t *model.Operation, svc *model.ServiceDoc, add func(field, format string, args ...any)) {
	if len(t.Methods) > 0 && !slices.ContainsFunc(t.Methods, func(m string) bool { return !slices.Contains(t.NotMethods, m) }) {
		add("to.methods", "every method listed is excluded by notMethods")
	}
	if len(t.Paths) > 0 && len(t.NotPaths) > 0 {
		not := pattern.ParsePaths(t.NotPaths)
		if !slices.ContainsFunc(t.Paths, func(p string) bool { return !not.Covers(p) }) {
			add("to.paths", "every path listed is excluded by notPaths")
		}
	}
	if svc != nil && len(t.Ports) > 0 {
		possible := slices.ContainsFunc(t.Ports, func(p uint32) bool {
			return slices.ContainsFunc(svc.Spec.Ports, func(sp model.ServicePort) bool { return sp.Port == p })
		})
		if !possible {
			var have []uint32
			for _, sp := range svc.Spec.Ports {
				have = append(have, sp.Port)
			}
			add("to.ports", "none of the ports %v is a port of service %s (it has %v)", t.Ports, svc.Metadata.Name, have)
		}
	}
}

// lintWhen finds contradictions between a rule's when conditions (which must all hold): tests of
// one single-valued attribute that no value passes together, and source-IP ranges that exclude
// each other.
func lintWhen(when []model.Condition, add func(k int, format string, args ...any)) {
	type test struct {
		k  int
		op pattern.Operator
	}
	byAttr := map[string][]test{}
	var ipSets []struct {
		k   int
		set []netip.Prefix
	}
	var notIPs []netip.Prefix
	for k := range when {
		c := &when[k]
		switch {
		case c.Attribute != "" || c.Header != "":
			attr := c.Attribute
			if c.Header != "" {
				attr = "request.headers." + strings.ToLower(c.Header)
			}
			if !singleValued(attr) {
				continue
			}
			op, err := pattern.ParseOperator(&c.ValueMatch)
			if err != nil {
				continue
			}
			byAttr[attr] = append(byAttr[attr], test{k, op})
		case len(c.SourceIPs) > 0:
			if set, err := pattern.ParseAddresses(c.SourceIPs); err == nil {
				ipSets = append(ipSets, struct {
					k   int
					set []netip.Prefix
				}{k, set})
			}
		case len(c.NotSourceIPs) > 0:
			if set, err := pattern.ParseAddresses(c.NotSourceIPs); err == nil {
				notIPs = append(notIPs, set...)
			}
		}
	}
	for attr, tests := range byAttr {
		if len(tests) < 2 {
			continue
		}
		// The values the equals/in tests allow; a contradiction when no value passes them all.
		var candidates []string
		fixed := false
		for _, t := range tests {
			if vals, ok := t.op.Values(); ok {
				candidates, fixed = intersect(candidates, vals, fixed), true
			}
		}
		if !fixed {
			continue
		}
		candidates = slices.DeleteFunc(candidates, func(v string) bool {
			for _, t := range tests {
				if !t.op.Test(pattern.Value{One: v, OK: true}) {
					return true
				}
			}
			return false
		})
		if len(candidates) == 0 {
			add(tests[len(tests)-1].k, "no value of %s satisfies all of its conditions", attr)
		}
	}
	for i, a := range ipSets {
		for _, b := range ipSets[i+1:] {
			if !overlaps(a.set, b.set) {
				add(b.k, "sourceIPs %v and %v (conditions %d and %d) have no address in common", a.set, b.set, a.k, b.k)
			}
		}
		if len(notIPs) > 0 && !slices.ContainsFunc(a.set, func(p netip.Prefix) bool { return !coveredBy(p, notIPs) }) {
			add(a.k, "every address in sourceIPs %v is excluded by notSourceIPs", a.set)
		}
	}
}

// singleValued reports whether an attribute has at most one value per request, so that two
// different equals tests contradict each other. Claims, query parameters and headers can be
// lists (a header sent twice has two values, and each condition may match a different one).
func singleValued(attr string) bool {
	for _, list := range []string{"jwt.claims.", "request.query.", "request.headers."} {
		if strings.HasPrefix(attr, list) {
			return false
		}
	}
	return attr != "jwt.providers"
}

func intersect(have, with []string, fixed bool) []string {
	if !fixed {
		return slices.Clone(with)
	}
	return slices.DeleteFunc(have, func(v string) bool { return !slices.Contains(with, v) })
}

func overlaps(a, b []netip.Prefix) bool {
	for _, p := range a {
		for _, q := range b {
			if p.Overlaps(q) {
				return true
			}
		}
	}
	return false
}

func coveredBy(p netip.Prefix, by []netip.Prefix) bool {
	for _, q := range by {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
