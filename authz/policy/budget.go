package policy

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DefaultRegoBudget is how long the Rego modules of one decision may evaluate in all, in wall
// time: a module costs tens of microseconds (docs/policies.md, "Performance"), so only a module
// written to run away reaches it, while a CPU-starved process still decides within it; the
// authorization call has 250ms unless the mesh says otherwise.
const DefaultRegoBudget = 100 * time.Millisecond

// BudgetError is why a Rego evaluation was stopped: the decision's budget ran out, waiting for an
// evaluation slot or evaluating. It fails closed like any evaluation error.
type BudgetError struct{ Budget time.Duration }

func (e *BudgetError) Error() string {
	return fmt.Sprintf("evaluation exceeded the decision's Rego budget of %s", e.Budget)
}

// regoLimits bound what Rego costs. Time: the evaluations of one decision share a deadline, which
// OPA checks between evaluation steps and inside the builtins that can build large values
// (numbers.range, concat, replace, net.cidr_expand). Memory: an evaluation allocates at most what
// it can in its budget, and at most slots evaluations run at once, so a module written to
// exhaust memory holds a bounded amount before it is stopped; the builtins whose allocation an
// argument sets in one uninterruptible call are not available at all (unboundedBuiltins,
// checkSprintf).
type regoLimits struct {
	budget time.Duration
	slots  chan struct{}
}

func newRegoLimits(budget time.Duration) *regoLimits {
	if budget <= 0 {
		budget = DefaultRegoBudget
	}
	// Evaluation is CPU-bound: more at once than cores adds memory, not throughput.
	return &regoLimits{budget: budget, slots: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
}

// acquire waits for an evaluation slot until ctx (the decision's budget) ends.
func (l *regoLimits) acquire(ctx context.Context) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	default:
	}
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// budgetContext returns the context of the decision's Rego evaluations, started on first use.
func (in *regoInput) budgetContext(ctx context.Context) context.Context {
	if in.ctx == nil {
		in.ctx, in.cancel = context.WithTimeoutCause(ctx, in.limits.budget, &BudgetError{in.limits.budget})
	}
	return in.ctx
}

// release ends the decision's budget.
func (in *regoInput) release() {
	if in.cancel != nil {
		in.cancel()
	}
}

// unboundedBuiltins allocate in one call what an argument says, without checking for
// cancellation: bits.lsh(1, 1e12) asks for 125 GB, a template can range over 1e9, and the paths
// of a small dense graph are exponentially many. The Go runtime does not survive running out of
// memory, so these are refused at compile time rather than stopped at run time.
var unboundedBuiltins = []string{"bits.lsh", "strings.render_template", "graph.reachable_paths"}

// maxSprintfWidth bounds a width or precision in a sprintf format: fmt pads to it in one
// allocation ("%999999999d" is a gigabyte).
const maxSprintfWidth = 256

// checkBuiltins refuses calls to unboundedBuiltins with the reason (the compiler alone would
// only say the function is undefined) and sprintf calls checkSprintf refuses.
func checkBuiltins(mod *ast.Module) []finding {
	var out []finding
	ast.WalkTerms(mod, func(t *ast.Term) bool {
		ref, ok := t.Value.(ast.Ref)
		if !ok {
			return false
		}
		for _, name := range unboundedBuiltins {
			if ref.String() == name {
				line := 0
				if t.Location != nil {
					line = t.Location.Row
				}
				out = append(out, finding{field: moduleField, regoLine: line,
					message: fmt.Sprintf("rego line %d: %s is not available: one call can allocate without bound, and no budget can stop it", line, name)})
			}
		}
		return false
	})
	return append(out, checkSprintf(mod)...)
}

// checkSprintf refuses sprintf calls whose format is not a literal string, or asks for a width or
// precision above maxSprintfWidth or from an argument ("*"), with the Rego line of each.
func checkSprintf(mod *ast.Module) []finding {
	var out []finding
	check := func(loc *ast.Location, operands []*ast.Term) {
		if len(operands) == 0 {
			return
		}
		line := 0
		if loc != nil {
			line = loc.Row
		}
		s, ok := operands[0].Value.(ast.String)
		if !ok {
			out = append(out, finding{field: moduleField, regoLine: line, message: fmt.Sprintf("rego line %d: sprintf's format must be a literal string (its widths bound what it allocates)", line)})
			return
		}
		if err := checkFormat(string(s)); err != nil {
			out = append(out, finding{field: moduleField, regoLine: line, message: fmt.Sprintf("rego line %d: sprintf: %v", line, err)})
		}
	}
	isSprintf := func(t *ast.Term) bool { return t != nil && t.Value.Compare(ast.Sprintf.Ref()) == 0 }
	ast.WalkExprs(mod, func(e *ast.Expr) bool {
		if terms, ok := e.Terms.([]*ast.Term); ok && len(terms) > 0 && isSprintf(terms[0]) {
			check(e.Location, terms[1:])
		}
		return false
	})
	ast.WalkTerms(mod, func(t *ast.Term) bool {
		if call, ok := t.Value.(ast.Call); ok && len(call) > 0 && isSprintf(call[0]) {
			check(t.Location, call[1:])
		}
		return false
	})
	return out
}

// checkFormat checks the widths and precisions of a Go format string.
func checkFormat(f string) error {
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			continue
		}
		for i < len(f) && (f[i] == '+' || f[i] == '-' || f[i] == '#' || f[i] == ' ' || f[i] == '0') {
			i++
		}
		for part := 0; part < 2; part++ { // the width, then after "." the precision
			if i < len(f) && f[i] == '[' { // an explicit argument index: %[2]d
				for i < len(f) && f[i] != ']' {
					i++
				}
				i++
			}
			if i < len(f) && f[i] == '*' {
				return errors.New("a width or precision from an argument (\"*\") is not allowed")
			}
			start := i
			for i < len(f) && f[i] >= '0' && f[i] <= '9' {
				i++
			}
			if i > start {
				if n, err := strconv.Atoi(f[start:i]); err != nil || n > maxSprintfWidth {
					return fmt.Errorf("width or precision %s is above %d", f[start:i], maxSprintfWidth)
				}
			}
			if part == 0 && i < len(f) && f[i] == '.' {
				i++
				continue
			}
			break
		}
	}
	return nil
}
