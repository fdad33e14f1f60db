package policy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/portcullis/portcullis/xds/model"
)

// The Rego contract (docs/policies.md): a module defines a boolean `match` and may define the
// strings `reason` and `rule`. A generated module in this package collects them into one object,
// so each evaluation is one prepared query, whichever of the optional rules the module has.
const (
	resultPackage = "portcullis_internal_result"
	resultQuery   = "data." + resultPackage + ".result"
)

// disallowedBuiltins would let a policy reach the network or the process environment: decisions
// must depend on the request alone, and evaluation must not block on I/O.
var disallowedBuiltins = []string{"http.send", "net.lookup_ip_addr", "opa.runtime"}

// capabilities are OPA's for this version minus disallowedBuiltins, computed once.
var capabilities = sync.OnceValue(func() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(disallowedBuiltins, b.Name) || slices.Contains(unboundedBuiltins, b.Name)
	})
	return caps
})

// regoQuery is one compiled module, ready to evaluate concurrently.
type regoQuery struct {
	hash string
	pq   rego.PreparedEvalQuery
}

type regoResult struct {
	match        bool
	reason, rule string
}

// names are the rule and reason a match is reported with: the module's own, or "rego" and
// "rego module matched" when it sets none. Decisions and explanations both use them.
func (r regoResult) names() (rule, reason string) {
	return cmp.Or(r.rule, "rego"), cmp.Or(r.reason, "rego module matched")
}

func moduleHash(src string) string {
	sum := sha256.Sum256([]byte(src))
	return hex.EncodeToString(sum[:])
}

// compileRego compiles a policy's module, or returns the one compiled before from the same text.
func (c *Compiler) compileRego(doc *model.AuthorizationPolicyDoc) (*regoQuery, []finding) {
	src := doc.Spec.Rego.Module
	h := moduleHash(src)
	c.mu.Lock()
	q := c.rego[h]
	c.mu.Unlock()
	if q != nil {
		return q, nil
	}
	q, fs := compileModule(model.RefOf(doc).String(), src)
	if q != nil {
		q.hash = h
		c.mu.Lock()
		c.rego[h] = q
		c.mu.Unlock()
	}
	return q, fs
}

const moduleField = model.Path("spec.rego.module")

func compileModule(name, src string) (*regoQuery, []finding) {
	file := name + ".rego"
	caps := capabilities()
	mod, err := ast.ParseModuleWithOpts(file, src, ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps})
	if err != nil {
		return nil, regoFindings(err)
	}
	if mod == nil {
		return nil, []finding{{field: moduleField, message: "empty Rego module"}}
	}
	pkg := mod.Package.Path.String()
	if pkg == "data."+resultPackage {
		return nil, []finding{{field: moduleField, regoLine: 1, message: fmt.Sprintf("package %s is reserved", resultPackage)}}
	}
	defined := map[string]bool{}
	for _, r := range mod.Rules {
		ref := r.Head.Ref()
		if len(ref) != 1 {
			continue
		}
		name := ref.String()
		if (name == "match" || name == "reason" || name == "rule") && r.Head.RuleKind() != ast.SingleValue {
			return nil, []finding{{field: moduleField, regoLine: r.Location.Row, message: fmt.Sprintf("%q must be a single-value rule (a boolean or string), not a set", name)}}
		}
		defined[name] = true
	}
	if fs := checkBuiltins(mod); len(fs) > 0 {
		return nil, fs
	}
	if !defined["match"] {
		return nil, []finding{{field: moduleField, message: "the module must define a boolean rule `match` (true when the policy applies to the request); see docs/policies.md"}}
	}
	gen := fmt.Sprintf("package %s\n\ndefault match := false\nmatch := m if {\n\tm := %s.match\n\tis_boolean(m)\n}\n", resultPackage, pkg)
	for _, opt := range []string{"reason", "rule"} {
		gen += fmt.Sprintf("\ndefault %[1]s := \"\"\n", opt)
		if defined[opt] {
			gen += fmt.Sprintf("%[1]s := s if {\n\ts := %[2]s.%[1]s\n\tis_string(s)\n}\n", opt, pkg)
		}
	}
	gen += "\nresult := {\"match\": match, \"reason\": reason, \"rule\": rule}\n"
	genMod, err := ast.ParseModuleWithOpts(resultPackage+".rego", gen, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, []finding{{field: moduleField, message: "internal: generated module: " + err.Error()}}
	}
	compiler := ast.NewCompiler().WithCapabilities(caps)
	compiler.Compile(map[string]*ast.Module{file: mod, resultPackage + ".rego": genMod})
	if compiler.Failed() {
		return nil, regoFindings(compiler.Errors)
	}
	pq, err := rego.New(rego.Query(resultQuery), rego.Compiler(compiler)).PrepareForEval(context.Background())
	if err != nil {
		return nil, regoFindings(err)
	}
	return &regoQuery{pq: pq}, nil
}

// regoFindings turns OPA's errors into findings with the line inside the module.
func regoFindings(err error) []finding {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		return []finding{{field: moduleField, message: err.Error()}}
	}
	out := make([]finding, 0, len(errs))
	for _, e := range errs {
		f := finding{field: moduleField, message: fmt.Sprintf("%s: %s", e.Code, e.Message)}
		if e.Location != nil && e.Location.File != resultPackage+".rego" {
			f.regoLine = e.Location.Row
			f.message = fmt.Sprintf("rego line %d: %s", e.Location.Row, f.message)
		}
		out = append(out, f)
	}
	return out
}

func (q *regoQuery) eval(ctx context.Context, input ast.Value) (regoResult, error) {
	rs, err := q.pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return regoResult{}, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return regoResult{}, errors.New("the module's result is undefined")
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return regoResult{}, fmt.Errorf("unexpected result %T", rs[0].Expressions[0].Value)
	}
	var r regoResult
	r.match, _ = obj["match"].(bool)     // the generated module makes it a boolean
	r.reason, _ = obj["reason"].(string) // likewise strings
	r.rule, _ = obj["rule"].(string)
	return r, nil
}

// regoInput is what the Rego evaluations of one decision share: the input document, built on
// first use, and the budget (budget.go).
type regoInput struct {
	value  ast.Value
	err    error
	limits *regoLimits
	ctx    context.Context
	cancel context.CancelFunc
}

func (in *regoInput) get(a *Attributes) (ast.Value, error) {
	if in.value == nil && in.err == nil {
		in.value, in.err = InputDocument(a)
	}
	return in.value, in.err
}

// InputDocument returns the attributes as the Rego input document: the attribute paths as
// nested objects (docs/policies.md shows it).
func InputDocument(a *Attributes) (ast.Value, error) {
	s := func(v string) *ast.Term { return ast.StringTerm(v) }
	item := func(k string, v *ast.Term) [2]*ast.Term { return ast.Item(ast.StringTerm(k), v) }
	addr := ""
	if a.Source.Address.IsValid() {
		addr = a.Source.Address.Unmap().String()
	}
	// headers keeps its documented form, each header's values joined with "," (what HTTP
	// allows a recipient to do, RFC 9110 §5.3); headerValues has every value apart, which is
	// what a module must test to see each value the application may read.
	headers := ast.NewObjectWithCapacity(len(a.Request.Headers))
	headerValues := ast.NewObjectWithCapacity(len(a.Request.Headers))
	for k, vs := range a.Request.Headers {
		key := ast.StringTerm(k)
		headers.Insert(key, ast.StringTerm(strings.Join(vs, ",")))
		arr := make([]*ast.Term, len(vs))
		for i, v := range vs {
			arr[i] = ast.StringTerm(v)
		}
		headerValues.Insert(key, ast.ArrayTerm(arr...))
	}
	query := ast.NewObject()
	if a.Request.Query != "" {
		q, err := url.ParseQuery(a.Request.Query)
		if err != nil {
			return nil, fmt.Errorf("policy: query: %w", err)
		}
		for k, vs := range q {
			arr := make([]*ast.Term, len(vs))
			for i, v := range vs {
				arr[i] = ast.StringTerm(v)
			}
			query.Insert(ast.StringTerm(k), ast.ArrayTerm(arr...))
		}
	}
	reqTime := ""
	if !a.Request.Time.IsZero() {
		reqTime = a.Request.Time.UTC().Format(time.RFC3339Nano)
	}
	doc := ast.NewObject(
		item("source", ast.ObjectTerm(
			item("principal", s(a.Source.Principal)),
			item("trustDomain", s(a.Source.TrustDomain)),
			item("namespace", s(a.Source.Namespace)),
			item("serviceAccount", s(a.Source.ServiceAccount)),
			item("address", s(addr)),
		)),
		item("destination", ast.ObjectTerm(
			item("service", s(a.Destination.Service)),
			item("namespace", s(a.Destination.Namespace)),
			item("principal", s(a.Destination.Principal)),
			item("port", ast.IntNumberTerm(int(a.Destination.Port))),
		)),
		item("request", ast.ObjectTerm(
			item("id", s(a.Request.ID)),
			item("method", s(a.Request.Method)),
			item("path", s(a.Request.Path)),
			item("query", ast.NewTerm(query)),
			item("host", s(a.Request.Host)),
			item("scheme", s(a.Request.Scheme)),
			item("protocol", s(a.Request.Protocol)),
			item("sni", s(a.Request.SNI)),
			item("headers", ast.NewTerm(headers)),
			item("headerValues", ast.NewTerm(headerValues)),
			item("time", s(reqTime)),
		)),
	)
	if t := a.JWT; t != nil {
		claims, err := ast.InterfaceToValue(t.Claims.Raw())
		if err != nil {
			return nil, fmt.Errorf("policy: claims: %w", err)
		}
		providers := make([]*ast.Term, len(t.Providers))
		for i, p := range t.Providers {
			providers[i] = s(p)
		}
		doc.Insert(ast.StringTerm("jwt"), ast.ObjectTerm(
			item("issuer", s(t.Issuer)),
			item("subject", s(t.Subject)),
			item("providers", ast.ArrayTerm(providers...)),
			item("claims", ast.NewTerm(claims)),
		))
	}
	if k := a.APIKey; k != nil {
		attrs := ast.NewObjectWithCapacity(len(k.Attributes))
		for name, vals := range k.Attributes {
			arr := make([]*ast.Term, len(vals))
			for i, v := range vals {
				arr[i] = s(v)
			}
			attrs.Insert(s(name), ast.ArrayTerm(arr...))
		}
		doc.Insert(ast.StringTerm("apiKey"), ast.ObjectTerm(
			item("id", s(k.ID)),
			item("identity", s(k.Identity)),
			item("provider", s(k.Provider)),
			item("attributes", ast.NewTerm(attrs)),
		))
	}
	return doc, nil
}
