package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/portcullis/portcullis/xds/model"
)

// policiesFor returns the policies that apply to a destination: those selecting its service,
// those without a selector in its namespace, and those without a selector in the root namespace.
func (e *Engine) policiesFor(d *Destination) *policySet {
	if s, ok := e.byService[model.Ref{Namespace: d.Namespace, Name: d.Service}]; ok {
		return s
	}
	if s, ok := e.byNamespace[d.Namespace]; ok {
		return s
	}
	return e.rootWide
}

// verifiesTokens reports whether a JWTProvider verifies tokens for destinations in namespace
// ns: without one a JWT requirement there can never be met.
func (e *Engine) verifiesTokens(ns string) bool {
	return e.jwtNamespaces[ns] || e.jwtNamespaces[e.rootNamespace]
}

// evaluate reports whether a policy matches: its first matching rule, else its Rego module.
// A Rego evaluation error fails closed: a DENY policy matches, an ALLOW (or AUDIT) policy does
// not; the error is returned either way to be logged.
func (p *policy) evaluate(ctx context.Context, a *Attributes, in *regoInput) (Match, bool, error) {
	for _, r := range p.rules {
		if r.match(a) {
			return Match{Policy: p.name, Action: p.doc.Spec.Action, Rule: r.name, Reason: r.reason}, true, nil
		}
	}
	if p.rego == nil {
		return Match{}, false, nil
	}
	res, err := p.evalRego(ctx, a, in)
	if err != nil {
		reason := "rego evaluation failed (fail closed)"
		if _, ok := errors.AsType[*BudgetError](err); ok {
			reason = "rego evaluation exceeded its budget (fail closed)"
		}
		err = fmt.Errorf("policy %s: rego: %w", p.name, err)
		if p.doc.Spec.Action == model.ActionDeny {
			return Match{Policy: p.name, Action: model.ActionDeny, Rule: "rego", Reason: reason}, true, err
		}
		return Match{}, false, err
	}
	if !res.match {
		return Match{}, false, nil
	}
	rule, reason := res.names()
	return Match{Policy: p.name, Action: p.doc.Spec.Action, Rule: rule, Reason: reason}, true, nil
}

// evalRego evaluates the policy's module within the decision's budget.
func (p *policy) evalRego(ctx context.Context, a *Attributes, in *regoInput) (regoResult, error) {
	input, err := in.get(a)
	if err != nil {
		return regoResult{}, err
	}
	ctx = in.budgetContext(ctx)
	release, err := in.limits.acquire(ctx)
	if err != nil {
		return regoResult{}, err
	}
	defer release()
	res, err := p.rego.eval(ctx, input)
	if err != nil && ctx.Err() != nil {
		// OPA reports a cancelled query; the cause says which budget ran out.
		return regoResult{}, context.Cause(ctx)
	}
	return res, err
}

// Decide decides a request. It never fails: evaluation errors fail closed and are recorded in
// the decision.
func (e *Engine) Decide(ctx context.Context, a *Attributes) Decision {
	start := e.now()
	d := Decision{ID: NewDecisionID(start), MeshVersion: e.version}
	set := e.policiesFor(&a.Destination)
	in := regoInput{limits: e.rego}
	defer in.release()

	decided := false
	for _, p := range set.deny {
		m, ok, err := p.evaluate(ctx, a, &in)
		d.addError(err)
		if ok {
			d.Allow, d.Code, d.Policy, d.Rule, d.Reason = false, CodeDenied, m.Policy, m.Rule, m.Reason
			decided = true
			break
		}
	}
	if !decided {
		for _, p := range set.allow {
			m, ok, err := p.evaluate(ctx, a, &in)
			d.addError(err)
			if ok {
				d.Allow, d.Code, d.Policy, d.Rule, d.Reason = true, CodeAllowed, m.Policy, m.Rule, m.Reason
				decided = true
				break
			}
		}
	}
	if !decided {
		e.applyDefault(&d, set, a)
	}
	for _, p := range set.audit {
		m, ok, err := p.evaluate(ctx, a, &in)
		d.addError(err)
		if ok {
			d.Audits = append(d.Audits, m)
		}
	}
	if len(set.dryRun) > 0 {
		d.DryRun = e.dryRun(ctx, &d, set, a, &in)
	}
	d.Duration = e.now().Sub(start)
	return d
}

func (d *Decision) addError(err error) {
	if err != nil {
		d.Errors = append(d.Errors, err.Error())
	}
}

// applyDefault applies the mesh default when no DENY and no ALLOW matched.
func (e *Engine) applyDefault(d *Decision, set *policySet, a *Attributes) {
	d.Policy, d.Rule = "", ""
	if e.defaultAllow {
		d.Allow, d.Code, d.Reason = true, CodeAllowedDefault, "no ALLOW policy matched; the mesh default is ALLOW"
		return
	}
	d.Allow, d.Code = false, CodeDeniedDefault
	switch {
	case len(set.allow) == 0:
		d.Reason = "no ALLOW policy applies to this destination; the mesh default is DENY"
	default:
		d.Reason = "no ALLOW policy matched; the mesh default is DENY"
	}
	// 401 asks for a token; where no provider verifies tokens, none could help.
	if a.JWT == nil && set.allowNeedsJWT && e.verifiesTokens(a.Destination.Namespace) {
		for _, p := range set.allow {
			for _, r := range p.rules {
				if r.jwt != nil && r.matchWithoutJWT(a) {
					d.Code, d.Policy, d.Rule = CodeJWTRequired, p.name, r.name
					d.Reason = "a verified JWT is required"
					return
				}
			}
		}
	}
}

// dryRun evaluates the dry-run policies and the decision that enforcing them would make. Adding
// policies can only add a DENY match (which overrides any ALLOW) or, when the real decision came
// from the default, an ALLOW match; so the decision made is the starting point.
func (e *Engine) dryRun(ctx context.Context, decided *Decision, set *policySet, a *Attributes, in *regoInput) *DryRun {
	dr := &DryRun{}
	deny, allow := -1, -1
	for _, p := range set.dryRun {
		m, ok, err := p.evaluate(ctx, a, in)
		decided.addError(err)
		if !ok {
			continue
		}
		dr.Matches = append(dr.Matches, m)
		switch {
		case p.doc.Spec.Action == model.ActionDeny && deny < 0:
			deny = len(dr.Matches) - 1
		case p.doc.Spec.Action == model.ActionAllow && allow < 0:
			allow = len(dr.Matches) - 1
		}
	}
	dr.Allow, dr.Code, dr.Policy, dr.Rule = decided.Allow, decided.Code, decided.Policy, decided.Rule
	switch {
	case decided.Code == CodeDenied:
	case deny >= 0:
		m := dr.Matches[deny]
		dr.Allow, dr.Code, dr.Policy, dr.Rule = false, CodeDenied, m.Policy, m.Rule
	case decided.Code == CodeAllowed:
	case allow >= 0:
		m := dr.Matches[allow]
		dr.Allow, dr.Code, dr.Policy, dr.Rule = true, CodeAllowed, m.Policy, m.Rule
	}
	dr.Changed = dr.Allow != decided.Allow
	return dr
}
