package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Document is one decoded document with where it came from. FieldLines maps field paths to the
// line they start on, so problems can point at a line; sources without lines leave it nil.
type Document struct {
	Origin     Origin
	Object     Object
	FieldLines map[Path]int
}

// Mesh is a validated, defaulted set of documents. It is immutable once built: consumers share
// it between goroutines and must not modify it.
type Mesh struct {
	// Version is a content hash of every document; equal meshes have equal versions.
	Version               string                     `json:"version"`
	TrustDomain           spiffeid.TrustDomain       `json:"-"`
	Config                *MeshDoc                   `json:"mesh"`
	Services              []*ServiceDoc              `json:"services"`
	Workloads             []*WorkloadDoc             `json:"workloads"`
	JWTProviders          []*JWTProviderDoc          `json:"jwtProviders"`
	APIKeyProviders       []*APIKeyProviderDoc       `json:"apiKeyProviders,omitempty"`
	AuthorizationPolicies []*AuthorizationPolicyDoc  `json:"authorizationPolicies"`
	RateLimitPolicies     []*RateLimitPolicyDoc      `json:"rateLimitPolicies"`
	CredentialRevocations []*CredentialRevocationDoc `json:"credentialRevocations"`

	origins         map[kindRef]Origin
	lines           map[kindRef]map[Path]int
	workloadsByNode map[string]*WorkloadDoc
}

type kindRef struct {
	kind string
	ref  Ref
}

// Origin returns where a document of the mesh came from.
func (m *Mesh) Origin(o Object) Origin { return m.origins[kindRef{o.GetKind(), RefOf(o)}] }

// FieldLine returns the line a field of a document of the mesh starts on (or its nearest
// ancestor's), or 0 when the source recorded none. Checks that run after Build (such as compiling
// Rego) use it to point at the line of the problem.
func (m *Mesh) FieldLine(o Object, p Path) int { return LineOf(m.FieldLines(o), p) }

// FieldLines returns the lines of the fields of a document of the mesh, by path.
func (m *Mesh) FieldLines(o Object) map[Path]int { return m.lines[kindRef{o.GetKind(), RefOf(o)}] }

// Problem places msg at field of a document of the mesh, for checks that run after Build
// (compiling Rego, reading key files).
func (m *Mesh) Problem(o Object, field Path, msg string) Problem {
	return ProblemAt(m.Origin(o), m.FieldLines(o), o, field, msg)
}

// UnenforcedPolicies counts the AuthorizationPolicies no proxy enforces because the Mesh turns
// authorization OFF. Sources warn about them: a policy that does nothing looks like one that
// works.
func (m *Mesh) UnenforcedPolicies() int {
	if m.Config.Spec.Authz.Mode != AuthzOff {
		return 0
	}
	return len(m.AuthorizationPolicies)
}

// Service returns the named service, or nil.
func (m *Mesh) Service(namespace, name string) *ServiceDoc {
	i, ok := slices.BinarySearchFunc(m.Services, Ref{namespace, name}, func(s *ServiceDoc, r Ref) int { return compareRef(RefOf(s), r) })
	if !ok {
		return nil
	}
	return m.Services[i]
}

// ServiceIDs returns the SPIFFE IDs of a service's workloads, one per service account.
func (m *Mesh) ServiceIDs(s *ServiceDoc) []spiffeid.ID {
	ids := make([]spiffeid.ID, 0, len(s.Spec.ServiceAccounts))
	for _, sa := range s.Spec.ServiceAccounts {
		ids = append(ids, WorkloadID(m.TrustDomain, RefOf(s).Namespace, sa))
	}
	return ids
}

// WorkloadID is spiffe://<td>/ns/<namespace>/sa/<serviceAccount>. Its inputs are validated DNS
// labels, so it cannot fail for documents of a built Mesh.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", namespace, "sa", serviceAccount)
}

// ParseWorkloadID splits a mesh workload ID into namespace and service account.
func ParseWorkloadID(id spiffeid.ID) (namespace, serviceAccount string, err error) {
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return "", "", fmt.Errorf("model: %q is not a workload ID (spiffe://<td>/ns/<namespace>/sa/<account>)", id)
	}
	return seg[1], seg[3], nil
}

func compareRef(a, b Ref) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// Build validates documents on their own and against each other and returns the mesh they
// describe. On any problem it returns every problem found and no mesh.
func Build(docs []Document) (*Mesh, Problems) {
	b := builder{index: map[kindRef]int{}}
	b.validateEach(docs)
	if b.meshDoc == nil {
		b.problems = append(b.problems, Problem{Message: "no Mesh document: exactly one is required (it sets the trust domain)"})
	}
	b.checkReferences(docs)
	if len(b.problems) > 0 {
		b.problems.Sort()
		return nil, b.problems
	}
	m, err := b.mesh(docs)
	if err != nil {
		return nil, Problems{{Message: err.Error()}}
	}
	return m, nil
}

type builder struct {
	problems Problems
	index    map[kindRef]int // first document with that kind and ref
	invalid  map[int]bool    // documents that failed their own validation
	meshDoc  *MeshDoc
}

// CheckDocuments validates each document on its own and finds duplicates, without the checks
// that span documents. Sources use it when some documents did not even decode, where reference
// checks would only report the missing ones again as "not found".
func CheckDocuments(docs []Document) Problems {
	b := builder{index: map[kindRef]int{}}
	b.validateEach(docs)
	b.problems.Sort()
	return b.problems
}

func (b *builder) report(d *Document, field Path, format string, args ...any) {
	b.problems = append(b.problems, ProblemAt(d.Origin, d.FieldLines, d.Object, field, fmt.Sprintf(format, args...)))
}

func (b *builder) validateEach(docs []Document) {
	b.invalid = map[int]bool{}
	for i := range docs {
		d := &docs[i]
		for _, fe := range d.Object.Validate() {
			b.report(d, fe.Field, "%s", fe.Message)
			b.invalid[i] = true
		}
		kr := kindRef{d.Object.GetKind(), RefOf(d.Object)}
		if first, dup := b.index[kr]; dup {
			o := docs[first].Origin
			b.report(d, "metadata.name", "duplicate %s %q (first defined in %s document %d)", kr.kind, kr.ref, o.File, o.Document)
			b.invalid[i] = true
			continue
		}
		b.index[kr] = i
		if m, ok := d.Object.(*MeshDoc); ok {
			if b.meshDoc != nil {
				b.report(d, "", "only one Mesh document is allowed (found another: %q)", b.meshDoc.Metadata.Name)
				continue
			}
			b.meshDoc = m
		}
	}
}

// checkReferences checks what spans documents. Documents that failed their own validation are
// skipped as referrers (their fields may be garbage) but still count as existing referents, so
// one typo does not cascade into a page of "not found" errors.
func (b *builder) checkReferences(docs []Document) {
	td, root := "", DefaultRootNamespace
	if b.meshDoc != nil {
		td = b.meshDoc.Spec.TrustDomain
		root = cmp.Or(b.meshDoc.Spec.RootNamespace, root)
	}
	service := func(ns, name string) *ServiceDoc {
		i, ok := b.index[kindRef{KindService, Ref{ns, name}}]
		if !ok {
			return nil
		}
		s, _ := docs[i].Object.(*ServiceDoc)
		return s
	}
	inbound := map[string]*Document{}
	limitNames := map[string]*Document{}
	for i := range docs {
		if b.invalid[i] {
			continue
		}
		d := &docs[i]
		ns := RefOf(d.Object).Namespace
		switch o := d.Object.(type) {
		case *WorkloadDoc:
			b.checkWorkload(d, o, ns, service, inbound)
		case *AuthorizationPolicyDoc:
			if sel := o.Spec.Selector; sel != nil && service(ns, sel.Service) == nil {
				b.report(d, "spec.selector.service", "Service %q not found in namespace %q", sel.Service, ns)
			}
			b.checkPolicyRefs(d, o, ns, td, root)
		case *RateLimitPolicyDoc:
			if service(ns, o.Spec.Selector.Service) == nil {
				b.report(d, "spec.selector.service", "Service %q not found in namespace %q", o.Spec.Selector.Service, ns)
			}
			authzOff := b.meshDoc != nil && b.meshDoc.Spec.Authz.Mode == AuthzOff
			for j, l := range o.Spec.Limits {
				key := ns + "/" + o.Spec.Selector.Service + "/" + l.Name
				if prev, dup := limitNames[key]; dup {
					b.report(d, Path("spec.limits").Index(j).Field("name"), "limit %q is already defined for service %q by %s document %d", l.Name, o.Spec.Selector.Service, prev.Origin.File, prev.Origin.Document)
				}
				limitNames[key] = d
				if authzOff && l.Verified() {
					// Authorization verifies what these limits key on; without it they would
					// silently never apply.
					b.report(d, Path("spec.limits").Index(j).Field("by"), "keys on a verified attribute, which needs authorization: the Mesh's authz.mode is OFF")
				}
			}
		}
	}
}

func (b *builder) checkWorkload(d *Document, w *WorkloadDoc, ns string, service func(ns, name string) *ServiceDoc, inbound map[string]*Document) {
	s := &w.Spec
	svc := service(ns, s.Service)
	switch {
	case svc == nil && w.Transparent() && s.Service == "":
	case svc == nil:
		b.report(d, "spec.service", "Service %q not found in namespace %q", s.Service, ns)
	default:
		accounts := svc.Spec.ServiceAccounts
		if len(accounts) == 0 {
			accounts = []string{svc.Metadata.Name}
		}
		if s.ServiceAccount != "" && !slices.Contains(accounts, s.ServiceAccount) {
			b.report(d, "spec.serviceAccount", "%q is not a service account of Service %q (it has %s)", s.ServiceAccount, s.Service, strings.Join(accounts, ", "))
		}
		if !w.Transparent() && !slices.ContainsFunc(svc.Spec.Ports, func(p ServicePort) bool { return p.Port == w.ServedPort() }) {
			field := "spec.appPort"
			if s.ServicePort != 0 {
				field = "spec.servicePort"
			}
			b.report(d, Path(field), "%d is not a port of Service %q", w.ServedPort(), s.Service)
		}
	}
	addr := cmp.Or(s.Address, "127.0.0.1")
	port := s.InboundPort
	if w.Transparent() {
		port = cmpOr(port, DefaultTransparentInboundPort)
	}
	key := fmt.Sprintf("%s:%d", addr, port)
	if prev, dup := inbound[key]; dup {
		b.report(d, "spec.inboundPort", "%s is already the inbound address of Workload %q", key, RefOf(prev.Object))
	}
	inbound[key] = d
	for i, u := range s.Upstreams {
		up := Path("spec.upstreams").Index(i)
		uns, uname, _ := ParseServiceName(u.Service, ns)
		target := service(uns, uname)
		switch {
		case target == nil:
			b.report(d, up.Field("service"), "Service %q not found in namespace %q", uname, uns)
		case u.Port == 0 && len(target.Spec.Ports) > 1:
			b.report(d, up.Field("port"), "required: Service %q has %d ports", u.Service, len(target.Spec.Ports))
		case u.Port != 0 && !slices.ContainsFunc(target.Spec.Ports, func(p ServicePort) bool { return p.Port == u.Port }):
			b.report(d, up.Field("port"), "%d is not a port of Service %q", u.Port, u.Service)
		}
	}
}

func (b *builder) checkPolicyRefs(d *Document, o *AuthorizationPolicyDoc, ns, td, root string) {
	for i, r := range o.Spec.Rules {
		rp := Path("spec.rules").Index(i)
		if r.From == nil {
			continue
		}
		for field, list := range map[string][]string{"principals": r.From.Principals, "notPrincipals": r.From.NotPrincipals} {
			for j, pr := range list {
				if got := PrincipalTrustDomain(pr); got != "" && td != "" && got != td {
					b.report(d, rp.Field("from").Field(field).Index(j), "trust domain %q is not the mesh trust domain %q", got, td)
				}
			}
		}
		if r.From.JWT != nil {
			b.checkProviders(d, rp.Field("from.jwt.providers"), KindJWTProvider, r.From.JWT.Providers, ns, root)
		}
		if r.From.APIKey != nil {
			b.checkProviders(d, rp.Field("from.apiKey.providers"), KindAPIKeyProvider, r.From.APIKey.Providers, ns, root)
		}
	}
}

// checkProviders finds each provider a rule names, in the policy's namespace or the root namespace.
func (b *builder) checkProviders(d *Document, field Path, kind string, names []string, ns, root string) {
	exists := func(r Ref) bool { _, ok := b.index[kindRef{kind, r}]; return ok }
	for j, name := range names {
		if _, ok := resolveProvider(ns, root, name, exists); !ok {
			b.report(d, field.Index(j), "%s %q not found in namespace %q or the root namespace %q", kind, name, ns, root)
		}
	}
}

func (b *builder) mesh(docs []Document) (*Mesh, error) {
	m := &Mesh{origins: map[kindRef]Origin{}, lines: map[kindRef]map[Path]int{}, workloadsByNode: map[string]*WorkloadDoc{}}
	for _, d := range docs {
		d.Object.setDefaults()
		kr := kindRef{d.Object.GetKind(), RefOf(d.Object)}
		m.origins[kr] = d.Origin
		if d.FieldLines != nil {
			m.lines[kr] = d.FieldLines
		}
		switch o := d.Object.(type) {
		case *MeshDoc:
			m.Config = o
		case *ServiceDoc:
			m.Services = append(m.Services, o)
		case *WorkloadDoc:
			m.Workloads = append(m.Workloads, o)
			m.workloadsByNode[NodeID(o)] = o
		case *JWTProviderDoc:
			m.JWTProviders = append(m.JWTProviders, o)
		case *APIKeyProviderDoc:
			m.APIKeyProviders = append(m.APIKeyProviders, o)
		case *AuthorizationPolicyDoc:
			m.AuthorizationPolicies = append(m.AuthorizationPolicies, o)
		case *RateLimitPolicyDoc:
			m.RateLimitPolicies = append(m.RateLimitPolicies, o)
		case *CredentialRevocationDoc:
			m.CredentialRevocations = append(m.CredentialRevocations, o)
		}
	}
	m.TrustDomain = spiffeid.RequireTrustDomainFromString(m.Config.Spec.TrustDomain)
	sortByRef(m.Services)
	sortByRef(m.Workloads)
	sortByRef(m.JWTProviders)
	sortByRef(m.APIKeyProviders)
	sortByRef(m.AuthorizationPolicies)
	sortByRef(m.RateLimitPolicies)
	sortByRef(m.CredentialRevocations)
	v, err := contentHash(m)
	if err != nil {
		return nil, err
	}
	m.Version = v
	return m, nil
}

func sortByRef[T Object](list []T) {
	slices.SortFunc(list, func(a, b T) int { return compareRef(RefOf(a), RefOf(b)) })
}

// contentHash hashes the defaulted documents in their sorted order, so the version does not
// depend on file names or document order.
func contentHash(m *Mesh) (string, error) {
	h := sha256.New()
	if err := json.NewEncoder(h).Encode(m); err != nil {
		return "", fmt.Errorf("model: hashing mesh: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
