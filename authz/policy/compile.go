package policy

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/portcullis/portcullis/authz/policy/internal/pattern"
	"github.com/portcullis/portcullis/xds/model"
)

// Options configure a Compiler.
type Options struct {
	// Now is the clock for decision ids and durations; time.Now unless set.
	Now func() time.Time
	// RegoBudget is how long the Rego modules of one decision may evaluate in all;
	// DefaultRegoBudget unless set. A module stopped by it fails closed.
	RegoBudget time.Duration
}

// Compiler compiles meshes into engines. It remembers compiled Rego modules by content, so a
// module is compiled once however many mesh versions (and checks of candidate meshes) carry it.
// It is safe for concurrent use.
type Compiler struct {
	now    func() time.Time
	limits *regoLimits // shared by every engine it compiles
	mu     sync.Mutex
	rego   map[string]*regoQuery // by module hash
}

// NewCompiler returns a compiler.
func NewCompiler(opts Options) *Compiler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Compiler{now: opts.Now, limits: newRegoLimits(opts.RegoBudget), rego: map[string]*regoQuery{}}
}

// Engine is the compiled form of a mesh's policies. It is immutable and safe for concurrent use.
type Engine struct {
	version      string
	defaultAllow bool
	policies     []*policy
	// The policies that apply to a destination: those of byService for a service some policy
	// selects, else those of byNamespace for a namespace with policies without a selector, else
	// rootWide (the root namespace's policies without a selector, which every set includes).
	rootWide    *policySet
	byNamespace map[string]*policySet
	byService   map[model.Ref]*policySet
	// rootNamespace and jwtNamespaces (the namespaces with JWTProviders) say where tokens are
	// verified: a destination's namespace or the root namespace must have a provider.
	rootNamespace string
	jwtNamespaces map[string]bool
	now           func() time.Time
	compiledAt    time.Time
	rego          *regoLimits
}

// policySet is what applies to one destination, split by role, each list in name order.
type policySet struct {
	deny, allow, audit []*policy // enforced
	dryRun             []*policy
	all                []*policy
	// allowNeedsJWT is set when an enforced ALLOW rule requires a JWT: only then can a
	// default denial be answered 401.
	allowNeedsJWT bool
}

type policy struct {
	name      string // namespace/name
	namespace string
	doc       *model.AuthorizationPolicyDoc
	selector  *model.Ref // nil: every service of its namespace, or of the mesh in the root namespace
	rules     []*rule
	rego      *regoQuery
}

type rule struct {
	name   string
	reason string
	conds  []cond // by cost; the JWT requirement is separate
	jwt    *jwtCond
}

func (r *rule) match(a *Attributes) bool {
	for _, c := range r.conds {
		if !c.match(a) {
			return false
		}
	}
	return r.jwt == nil || r.jwt.match(a)
}

// matchWithoutJWT reports whether everything but the JWT requirement matches: a token would
// have made the difference.
func (r *rule) matchWithoutJWT(a *Attributes) bool {
	for _, c := range r.conds {
		if !c.match(a) {
			return false
		}
	}
	return true
}

// Compile builds the engine for a mesh with a compiler of its own (tools and tests; the server
// keeps one Compiler for its lifetime).
func Compile(m *model.Mesh) (*Engine, model.Problems) {
	return NewCompiler(Options{}).Compile(m)
}

// Compile builds the engine for a mesh. Problems name the document, field and (for Rego) line;
// with any problem no engine is returned. Compiled Rego modules that the mesh no longer uses are
// forgotten.
func (c *Compiler) Compile(m *model.Mesh) (*Engine, model.Problems) {
	e := &Engine{
		version:       m.Version,
		byNamespace:   map[string]*policySet{},
		byService:     map[model.Ref]*policySet{},
		rootNamespace: m.RootNamespace(),
		jwtNamespaces: map[string]bool{},
		now:           c.now,
		compiledAt:    c.now(),
		rego:          c.limits,
	}
	for _, p := range m.JWTProviders {
		e.jwtNamespaces[model.RefOf(p).Namespace] = true
	}
	if m.Config != nil {
		e.defaultAllow = m.Config.Spec.DefaultDecision == model.DecisionAllow
	}
	var problems model.Problems
	used := map[string]bool{}
	for _, doc := range m.AuthorizationPolicies {
		p, findings := c.compilePolicy(doc, m)
		if len(findings) > 0 {
			problems = append(problems, meshProblems(m, doc, findings)...)
			continue
		}
		if p.rego != nil {
			used[p.rego.hash] = true
		}
		e.policies = append(e.policies, p)
	}
	if len(problems) > 0 {
		problems.Sort()
		return nil, problems
	}
	c.mu.Lock()
	for h := range c.rego {
		if !used[h] {
			delete(c.rego, h)
		}
	}
	c.mu.Unlock()
	var rootWide []*policy
	nsWide := map[string][]*policy{}
	bySvc := map[model.Ref][]*policy{}
	for _, p := range e.policies {
		switch {
		case p.selector != nil:
			bySvc[*p.selector] = append(bySvc[*p.selector], p)
		case p.namespace == e.rootNamespace:
			rootWide = append(rootWide, p)
		default:
			nsWide[p.namespace] = append(nsWide[p.namespace], p)
		}
	}
	e.rootWide = newPolicySet(rootWide)
	for ns, ps := range nsWide {
		e.byNamespace[ns] = newPolicySet(sortedUnion(rootWide, ps))
	}
	for ref, ps := range bySvc {
		e.byService[ref] = newPolicySet(sortedUnion(rootWide, nsWide[ref.Namespace], ps))
	}
	return e, nil
}

func sortedUnion(lists ...[]*policy) []*policy {
	all := slices.Concat(lists...)
	slices.SortFunc(all, func(a, b *policy) int { return cmp.Compare(a.name, b.name) })
	return all
}

func newPolicySet(ps []*policy) *policySet {
	s := &policySet{all: ps}
	for _, p := range ps {
		if p.doc.Spec.DryRun {
			s.dryRun = append(s.dryRun, p)
			continue
		}
		switch p.doc.Spec.Action {
		case model.ActionDeny:
			s.deny = append(s.deny, p)
		case model.ActionAllow:
			s.allow = append(s.allow, p)
			for _, r := range p.rules {
				s.allowNeedsJWT = s.allowNeedsJWT || r.jwt != nil
			}
		case model.ActionAudit:
			s.audit = append(s.audit, p)
		}
	}
	return s
}

// compilePolicy compiles one policy. m resolves the JWTProviders its rules name; nil (documents
// outside a mesh, only checked) takes them from the policy's namespace.
func (c *Compiler) compilePolicy(doc *model.AuthorizationPolicyDoc, m *model.Mesh) (*policy, []finding) {
	ref := model.RefOf(doc)
	p := &policy{name: ref.String(), namespace: ref.Namespace, doc: doc}
	if s := doc.Spec.Selector; s != nil {
		p.selector = &model.Ref{Namespace: ref.Namespace, Name: s.Service}
	}
	local := func(name string) string { return ref.Namespace + "/" + name }
	sc := jwtScope{root: model.DefaultRootNamespace, provider: local, apiKeyProvider: local}
	if m != nil {
		sc.root = m.RootNamespace()
		sc.provider = func(name string) string {
			if d := m.JWTProvider(ref.Namespace, name); d != nil {
				return model.RefOf(d).String()
			}
			return local(name) // Build checked the reference: unreachable
		}
		sc.apiKeyProvider = func(name string) string {
			if d := m.APIKeyProvider(ref.Namespace, name); d != nil {
				return model.RefOf(d).String()
			}
			return local(name) // likewise
		}
	}
	var findings []finding
	for i := range doc.Spec.Rules {
		r, fs := compileRule(&doc.Spec.Rules[i], i, sc, model.Path("spec.rules").Index(i))
		findings = append(findings, fs...)
		p.rules = append(p.rules, r)
	}
	if doc.Spec.Rego != nil {
		q, fs := c.compileRego(doc)
		findings = append(findings, fs...)
		p.rego = q
	}
	return p, findings
}

// jwtScope is what a rule's from.jwt and from.apiKey resolve against.
type jwtScope struct {
	root           string
	provider       func(name string) string // namespace/name of the JWTProvider a rule names
	apiKeyProvider func(name string) string // and of the APIKeyProvider
}

func compileRule(r *model.Rule, i int, sc jwtScope, path model.Path) (*rule, []finding) {
	out := &rule{name: r.RuleName(i)}
	out.reason = fmt.Sprintf("rule %s matched", out.name)
	var findings []finding
	fail := func(field model.Path, err error) {
		findings = append(findings, finding{field: field, message: err.Error()})
	}
	if f := r.From; f != nil {
		if len(f.Principals) > 0 {
			out.conds = append(out.conds, &principalsCond{name: "principals", patterns: pattern.ParsePrincipals(f.Principals)})
		}
		if len(f.NotPrincipals) > 0 {
			out.conds = append(out.conds, &principalsCond{name: "notPrincipals", patterns: pattern.ParsePrincipals(f.NotPrincipals), not: true})
		}
		if len(f.Namespaces) > 0 {
			out.conds = append(out.conds, &setCond{fieldName: "from.namespaces", attr: "source.namespace", get: sourceNamespace, set: pattern.NewSet(f.Namespaces)})
		}
		if len(f.NotNamespaces) > 0 {
			out.conds = append(out.conds, &setCond{fieldName: "from.notNamespaces", attr: "source.namespace", get: sourceNamespace, set: pattern.NewSet(f.NotNamespaces), not: true})
		}
		if j := f.JWT; j != nil {
			jc := &jwtCond{rootNamespace: sc.root}
			for _, name := range j.Providers {
				jc.providers = append(jc.providers, sc.provider(name))
			}
			for k := range j.Claims {
				c := &j.Claims[k]
				op, err := pattern.ParseOperator(&c.ValueMatch)
				if err != nil {
					fail(path.Field("from.jwt.claims").Index(k), err)
					continue
				}
				jc.claims = append(jc.claims, &valueCond{path: fmt.Sprintf("from.jwt.claims[%d]", k), attr: "jwt.claims." + c.Claim, get: claimGetter(c.Claim), op: op})
			}
			out.jwt = jc
		}
		if k := f.APIKey; k != nil {
			kc := &apiKeyCond{rootNamespace: sc.root, identities: k.Identities}
			for _, name := range k.Providers {
				kc.providers = append(kc.providers, sc.apiKeyProvider(name))
			}
			for j := range k.Attributes {
				c := &k.Attributes[j]
				op, err := pattern.ParseOperator(&c.ValueMatch)
				if err != nil {
					fail(path.Field("from.apiKey.attributes").Index(j), err)
					continue
				}
				kc.attributes = append(kc.attributes, &valueCond{path: fmt.Sprintf("from.apiKey.attributes[%d]", j), attr: "apiKey.attributes." + c.Claim, get: apiKeyAttribute(c.Claim), op: op})
			}
			out.conds = append(out.conds, kc)
		}
	}
	if t := r.To; t != nil {
		if len(t.Methods) > 0 {
			out.conds = append(out.conds, &setCond{fieldName: "to.methods", attr: "request.method", get: requestMethod, set: pattern.NewSet(t.Methods)})
		}
		if len(t.NotMethods) > 0 {
			out.conds = append(out.conds, &setCond{fieldName: "to.notMethods", attr: "request.method", get: requestMethod, set: pattern.NewSet(t.NotMethods), not: true})
		}
		if len(t.Paths) > 0 {
			out.conds = append(out.conds, &pathsCond{patterns: pattern.ParsePaths(t.Paths)})
		}
		if len(t.NotPaths) > 0 {
			out.conds = append(out.conds, &pathsCond{patterns: pattern.ParsePaths(t.NotPaths), not: true})
		}
		if len(t.Ports) > 0 {
			out.conds = append(out.conds, &portsCond{ports: t.Ports})
		}
		if len(t.Hosts) > 0 {
			out.conds = append(out.conds, &hostsCond{patterns: pattern.ParseHosts(t.Hosts)})
		}
	}
	for k := range r.When {
		c, err := compileCondition(&r.When[k], fmt.Sprintf("when[%d]", k))
		if err != nil {
			fail(path.Field("when").Index(k), err)
			continue
		}
		out.conds = append(out.conds, c)
	}
	slices.SortStableFunc(out.conds, func(a, b cond) int { return cmp.Compare(a.cost(), b.cost()) })
	return out, findings
}

func sourceNamespace(a *Attributes) string { return a.Source.Namespace }
func requestMethod(a *Attributes) string   { return a.Request.Method }

func compileCondition(c *model.Condition, path string) (cond, error) {
	switch {
	case c.Attribute != "" || c.Header != "":
		attr := c.Attribute
		if c.Header != "" {
			attr = "request.headers." + c.Header
		}
		get, err := getterFor(attr)
		if err != nil {
			return nil, err
		}
		op, err := pattern.ParseOperator(&c.ValueMatch)
		if err != nil {
			return nil, err
		}
		return &valueCond{path: path, attr: attr, get: get, op: op}, nil
	case len(c.SourceIPs) > 0:
		ps, err := pattern.ParseAddresses(c.SourceIPs)
		if err != nil {
			return nil, err
		}
		return &ipCond{path: path + ".sourceIPs", prefixes: ps}, nil
	case len(c.NotSourceIPs) > 0:
		ps, err := pattern.ParseAddresses(c.NotSourceIPs)
		if err != nil {
			return nil, err
		}
		return &ipCond{path: path + ".notSourceIPs", prefixes: ps, not: true}, nil
	case c.Time != nil:
		w, err := pattern.ParseTimeWindow(c.Time)
		if err != nil {
			return nil, err
		}
		return &timeCond{path: path + ".time", window: w}, nil
	}
	return nil, fmt.Errorf("empty condition")
}

// Version returns the mesh version the engine was compiled from.
func (e *Engine) Version() string { return e.version }

// CompiledAt returns when the engine was compiled.
func (e *Engine) CompiledAt() time.Time { return e.compiledAt }

// Policies returns the number of compiled policies.
func (e *Engine) Policies() int { return len(e.policies) }

// Summary is a compiled policy as /debug/authz lists it.
type Summary struct {
	Policy string       `json:"policy"`
	Action model.Action `json:"action"`
	DryRun bool         `json:"dryRun,omitempty"`
	// Scope is "mesh-wide" or "service namespace/name".
	Scope string   `json:"scope"`
	Rules []string `json:"rules,omitempty"`
	Rego  bool     `json:"rego,omitempty"`
}

// Summaries lists the engine's policies in the order they are considered (by name).
func (e *Engine) Summaries() []Summary {
	out := make([]Summary, 0, len(e.policies))
	for _, p := range e.policies {
		s := Summary{Policy: p.name, Action: p.doc.Spec.Action, DryRun: p.doc.Spec.DryRun, Scope: "mesh-wide", Rego: p.rego != nil}
		if p.selector != nil {
			s.Scope = "service " + p.selector.String()
		}
		for _, r := range p.rules {
			s.Rules = append(s.Rules, r.name)
		}
		out = append(out, s)
	}
	return out
}
