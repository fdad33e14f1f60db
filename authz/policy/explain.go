package policy

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/portcullis/portcullis/xds/model"
)

// Explanation is a decision with every policy of the mesh: whether it applied, what each rule
// did, and the part of each rule that did not match.
type Explanation struct {
	Decision    Decision            `json:"decision"`
	Destination string              `json:"destination"`
	Policies    []PolicyExplanation `json:"policies"`
}

// PolicyExplanation is one policy's part in a decision.
type PolicyExplanation struct {
	Policy  string       `json:"policy"`
	Action  model.Action `json:"action"`
	DryRun  bool         `json:"dryRun,omitempty"`
	Scope   string       `json:"scope"`
	Applies bool         `json:"applies"`
	Matched bool         `json:"matched"`
	// Outcome says what the policy did: decided, overridden, audited, dry run, no match, or why
	// it did not apply.
	Outcome string            `json:"outcome"`
	Rules   []RuleExplanation `json:"rules,omitempty"`
	Rego    *RegoExplanation  `json:"rego,omitempty"`
}

// RuleExplanation is one rule's result.
type RuleExplanation struct {
	Rule       string     `json:"rule"`
	Matched    bool       `json:"matched"`
	Mismatches []Mismatch `json:"mismatches,omitempty"`
}

// Mismatch is a part of a rule that did not match, and why.
type Mismatch struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// RegoExplanation is a Rego module's result.
type RegoExplanation struct {
	Matched bool   `json:"matched"`
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Explain decides a request and explains the decision. It evaluates every rule of every policy
// (Decide stops early), so it is for tools, not for the request path.
func (e *Engine) Explain(ctx context.Context, a *Attributes) *Explanation {
	x := &Explanation{Decision: e.Decide(ctx, a), Destination: a.Destination.Namespace + "/" + a.Destination.Service}
	set := e.policiesFor(&a.Destination)
	applies := map[*policy]bool{}
	for _, p := range set.all {
		applies[p] = true
	}
	var in regoInput
	for _, p := range e.policies {
		pe := PolicyExplanation{Policy: p.name, Action: p.doc.Spec.Action, DryRun: p.doc.Spec.DryRun, Scope: "mesh-wide", Applies: applies[p]}
		if p.selector != nil {
			pe.Scope = "service " + p.selector.String()
		}
		if !pe.Applies {
			pe.Outcome = fmt.Sprintf("does not apply: it selects %s, the request is for %s", p.selector, x.Destination)
			x.Policies = append(x.Policies, pe)
			continue
		}
		for _, r := range p.rules {
			re := RuleExplanation{Rule: r.name, Matched: r.match(a)}
			if !re.Matched {
				for _, c := range r.conds {
					if !c.match(a) {
						re.Mismatches = append(re.Mismatches, Mismatch{Field: c.field(), Reason: c.explain(a)})
					}
				}
				if r.jwt != nil && !r.jwt.match(a) {
					re.Mismatches = append(re.Mismatches, Mismatch{Field: r.jwt.field(), Reason: r.jwt.explain(a)})
				}
			}
			pe.Matched = pe.Matched || re.Matched
			pe.Rules = append(pe.Rules, re)
		}
		if p.rego != nil {
			res, err := p.evalRego(ctx, a, &in)
			rx := &RegoExplanation{Matched: res.match, Rule: res.rule, Reason: res.reason}
			if err != nil {
				rx.Error = err.Error()
				rx.Matched = p.doc.Spec.Action == model.ActionDeny // fails closed, as in Decide
			}
			pe.Matched = pe.Matched || rx.Matched
			pe.Rego = rx
		}
		pe.Outcome = outcome(&pe, &x.Decision)
		x.Policies = append(x.Policies, pe)
	}
	return x
}

func outcome(pe *PolicyExplanation, d *Decision) string {
	switch {
	case !pe.Matched && pe.DryRun:
		return "dry run: no match"
	case !pe.Matched:
		return "no match"
	case pe.DryRun:
		return fmt.Sprintf("dry run: matched; enforced, it would %s the request", verb(pe.Action, false))
	case pe.Action == model.ActionAudit:
		return "audit: matched (logged and traced; no effect on the decision)"
	case d.Policy == pe.Policy:
		return fmt.Sprintf("decided: %s the request", verb(pe.Action, true))
	case pe.Action == model.ActionAllow && d.Code == CodeDenied:
		return fmt.Sprintf("matched, but DENY policy %s overrides it", d.Policy)
	}
	return fmt.Sprintf("matched; %s decided first (policies are considered in name order)", d.Policy)
}

func verb(a model.Action, past bool) string {
	v := map[model.Action][2]string{
		model.ActionAllow: {"allow", "allowed"},
		model.ActionDeny:  {"deny", "denied"},
		model.ActionAudit: {"audit", "audited"},
	}[a]
	if past {
		return v[1]
	}
	return v[0]
}

// WriteText writes the explanation for people.
func (x *Explanation) WriteText(w io.Writer) error {
	var b strings.Builder
	d := &x.Decision
	fmt.Fprintf(&b, "decision: %s (%s)", d.Outcome(), d.Code)
	switch {
	case d.Code == CodeJWTRequired:
		fmt.Fprintf(&b, ": with a verified JWT, %s rule %s would allow it", d.Policy, d.Rule)
	case d.Policy != "":
		fmt.Fprintf(&b, " by %s rule %s", d.Policy, d.Rule)
	}
	fmt.Fprintf(&b, "\nreason:   %s\ndestination: %s\nmesh version: %s\n", d.Reason, x.Destination, d.MeshVersion)
	for _, m := range d.Audits {
		fmt.Fprintf(&b, "audit:    %s rule %s matched\n", m.Policy, m.Rule)
	}
	if dr := d.DryRun; dr != nil {
		fmt.Fprintf(&b, "dry run:  enforcing dry-run policies would give %s (%s)", outcomeOf(dr.Allow), dr.Code)
		if dr.Changed {
			b.WriteString(" — a different decision")
		}
		b.WriteString("\n")
	}
	for _, e := range d.Errors {
		fmt.Fprintf(&b, "error:    %s\n", e)
	}
	for _, p := range x.Policies {
		dry := ""
		if p.DryRun {
			dry = ", dry run"
		}
		fmt.Fprintf(&b, "\n%s %s (%s%s): %s\n", p.Action, p.Policy, p.Scope, dry, p.Outcome)
		if !p.Applies {
			continue
		}
		for _, r := range p.Rules {
			if r.Matched {
				fmt.Fprintf(&b, "  rule %s: MATCH\n", r.Rule)
				continue
			}
			fmt.Fprintf(&b, "  rule %s: no match\n", r.Rule)
			for _, m := range r.Mismatches {
				fmt.Fprintf(&b, "    %s: %s\n", m.Field, m.Reason)
			}
		}
		if r := p.Rego; r != nil {
			switch {
			case r.Error != "":
				fmt.Fprintf(&b, "  rego: ERROR %s (fails closed)\n", r.Error)
			case r.Matched:
				fmt.Fprintf(&b, "  rego: MATCH rule=%q reason=%q\n", r.Rule, r.Reason)
			default:
				b.WriteString("  rego: match is false\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func outcomeOf(allow bool) model.Decision {
	if allow {
		return model.DecisionAllow
	}
	return model.DecisionDeny
}
