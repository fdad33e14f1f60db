package policy

import (
	"context"

	"github.com/portcullis/portcullis/xds/model"
)

// Evaluation is one policy evaluated in full for one request (Engine.Trace returns them).
type Evaluation struct {
	Policy string // namespace/name
	Action model.Action
	DryRun bool
	// Selector is the service the policy selects; nil for a policy without a selector.
	Selector *model.Ref
	// Namespace is the namespace a policy without a selector applies to; empty for one that
	// selects a service and for the root namespace's, which apply mesh-wide.
	Namespace string
	// Applies is false when the policy is for another service or namespace; it is then not
	// evaluated.
	Applies bool
	// Matched is true when a rule or the Rego module matched (a Rego error counts as a match
	// for a DENY policy: it fails closed, as in Decide).
	Matched bool
	Rules   []RuleTrace
	Rego    *RegoTrace
}

// RuleTrace is one rule's result.
type RuleTrace struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	// Mismatches are the parts of the rule that did not match, in the order the rule tests them.
	Mismatches []Mismatch `json:"mismatches,omitempty"`
}

// Mismatch is a part of a rule that did not match, and why.
type Mismatch struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// RegoTrace is a Rego module's result.
type RegoTrace struct {
	Matched bool   `json:"matched"`
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Trace evaluates every rule of every policy that applies to the request, in name order, and
// says which part of each rule failed and why. Decide stops at the first match; Trace does not,
// so it is for the authoring tools (authz/policy/explain), not for the request path.
func (e *Engine) Trace(ctx context.Context, a *Attributes) []Evaluation {
	set := e.policiesFor(&a.Destination)
	applies := make(map[*policy]bool, len(set.all))
	for _, p := range set.all {
		applies[p] = true
	}
	in := regoInput{limits: e.rego}
	defer in.release()
	out := make([]Evaluation, 0, len(e.policies))
	for _, p := range e.policies {
		pt := Evaluation{Policy: p.name, Action: p.doc.Spec.Action, DryRun: p.doc.Spec.DryRun, Selector: p.selector, Applies: applies[p]}
		if p.selector == nil && p.namespace != e.rootNamespace {
			pt.Namespace = p.namespace
		}
		if !pt.Applies {
			out = append(out, pt)
			continue
		}
		for _, r := range p.rules {
			rt := RuleTrace{Rule: r.name, Matched: r.match(a)}
			if !rt.Matched {
				for _, c := range r.conds {
					if !c.match(a) {
						rt.Mismatches = append(rt.Mismatches, Mismatch{Field: c.field(), Reason: c.explain(a)})
					}
				}
				if r.jwt != nil && !r.jwt.match(a) {
					rt.Mismatches = append(rt.Mismatches, Mismatch{Field: r.jwt.field(), Reason: r.jwt.explain(a)})
				}
			}
			pt.Matched = pt.Matched || rt.Matched
			pt.Rules = append(pt.Rules, rt)
		}
		if p.rego != nil {
			res, err := p.evalRego(ctx, a, &in)
			rt := &RegoTrace{Matched: res.match}
			if res.match {
				rt.Rule, rt.Reason = res.names() // as the decision names them
			}
			if err != nil {
				rt.Error = err.Error()
				rt.Matched = p.doc.Spec.Action == model.ActionDeny // fails closed, as in Decide
			}
			pt.Matched = pt.Matched || rt.Matched
			pt.Rego = rt
		}
		out = append(out, pt)
	}
	return out
}
