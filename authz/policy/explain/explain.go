package explain

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// Explanation is a decision with every policy of the mesh: whether it applied, what each rule
// did, and the part of each rule that did not match.
type Explanation struct {
	Decision    policy.Decision `json:"decision"`
	Destination string          `json:"destination"`
	Policies    []Policy        `json:"policies"`
}

// Policy is one policy's part in a decision.
type Policy struct {
	Policy  string       `json:"policy"`
	Action  model.Action `json:"action"`
	DryRun  bool         `json:"dryRun,omitempty"`
	Scope   string       `json:"scope"`
	Applies bool         `json:"applies"`
	Matched bool         `json:"matched"`
	// Outcome says what the policy did: decided, overridden, audited, dry run, no match, or why
	// it did not apply.
	Outcome string             `json:"outcome"`
	Rules   []policy.RuleTrace `json:"rules,omitempty"`
	Rego    *policy.RegoTrace  `json:"rego,omitempty"`
}

// Decide decides a request with e and explains the decision. It evaluates every rule of every
// policy (Engine.Trace), so it is for tools, not for the request path.
func Decide(ctx context.Context, e *policy.Engine, a *policy.Attributes) *Explanation {
	x := &Explanation{Decision: e.Decide(ctx, a), Destination: a.Destination.Namespace + "/" + a.Destination.Service}
	for _, t := range e.Trace(ctx, a) {
		p := Policy{Policy: t.Policy, Action: t.Action, DryRun: t.DryRun, Scope: "mesh-wide", Applies: t.Applies, Matched: t.Matched, Rules: t.Rules, Rego: t.Rego}
		switch {
		case t.Selector != nil:
			p.Scope = "service " + t.Selector.String()
		case t.Namespace != "":
			p.Scope = "namespace " + t.Namespace
		}
		switch {
		case t.Applies:
			p.Outcome = outcome(&p, &x.Decision)
		case t.Selector != nil:
			p.Outcome = fmt.Sprintf("does not apply: it selects %s, the request is for %s", t.Selector, x.Destination)
		default:
			p.Outcome = fmt.Sprintf("does not apply: it applies to namespace %s, the request is for %s", t.Namespace, x.Destination)
		}
		x.Policies = append(x.Policies, p)
	}
	return x
}

func outcome(pe *Policy, d *policy.Decision) string {
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
	case pe.Action == model.ActionAllow && d.Code == policy.CodeDenied:
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
	case d.Code == policy.CodeJWTRequired:
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
