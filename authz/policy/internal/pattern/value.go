package pattern

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/portcullis/portcullis/xds/model"
)

// Value is an attribute's value: one string, or several (a list claim, a repeated query
// parameter or header). It is passed by value so reading an attribute does not allocate.
type Value struct {
	One  string
	Many []string
	List bool // Many holds the value (it was a JSON array or repeated)
	// Lines marks Many as the values of a header sent more than once: each is tested as the
	// value of a header sent once would be, so "contains" looks for a word in each.
	Lines bool
	OK    bool // the attribute is present
}

// Any reports whether f holds for the value, or for any element of a list; false when absent.
func (v Value) Any(f func(string) bool) bool {
	if !v.OK {
		return false
	}
	if v.List {
		for _, s := range v.Many {
			if f(s) {
				return true
			}
		}
		return false
	}
	return f(v.One)
}

func (v Value) String() string {
	switch {
	case !v.OK:
		return "absent"
	case v.List:
		return fmt.Sprintf("%q", v.Many)
	}
	return fmt.Sprintf("%q", v.One)
}

type opKind int

const (
	opEquals opKind = iota
	opIn
	opContains
	opMatches
)

// Operator is a compiled ValueMatch: equals, in, contains or matches.
type Operator struct {
	kind   opKind
	arg    string
	set    Set
	re     *regexp.Regexp
	source string // for explanations
}

// ParseOperator compiles a ValueMatch; a "matches" expression must match the whole value.
func ParseOperator(v *model.ValueMatch) (Operator, error) {
	switch {
	case v.Equals != nil:
		return Operator{kind: opEquals, arg: *v.Equals, source: fmt.Sprintf("equals %q", *v.Equals)}, nil
	case v.In != nil:
		return Operator{kind: opIn, set: NewSet(v.In), source: fmt.Sprintf("in %q", v.In)}, nil
	case v.Contains != nil:
		return Operator{kind: opContains, arg: *v.Contains, source: fmt.Sprintf("contains %q", *v.Contains)}, nil
	case v.Matches != nil:
		// Anchored: "matches" means the whole value, not a substring.
		re, err := regexp.Compile(`^(?:` + *v.Matches + `)$`)
		if err != nil {
			return Operator{}, err
		}
		return Operator{kind: opMatches, re: re, source: fmt.Sprintf("matches %q", *v.Matches)}, nil
	}
	return Operator{}, fmt.Errorf("no operator")
}

// Test reports whether the value satisfies the operator. A list satisfies it when any element
// does; "contains" on a single string (or on each value of a repeated header) looks for a
// space-separated word (an OAuth scope), on a list for an element.
//
// There are no negated operators. One would have to mean "no element satisfies the operator"
// (the negation of Test, as a not-list in a rule means no entry matches), never "some element
// does not": otherwise repeating a header with a harmless value would satisfy it.
func (o *Operator) Test(v Value) bool {
	switch o.kind {
	case opEquals:
		return v.Any(func(s string) bool { return s == o.arg })
	case opIn:
		return v.Any(o.set.Has)
	case opContains:
		if v.List && !v.Lines {
			return v.Any(func(s string) bool { return s == o.arg })
		}
		return v.Any(func(s string) bool { return hasWord(s, o.arg) })
	case opMatches:
		return v.Any(o.re.MatchString)
	}
	return false
}

// Values returns the values an equals or in operator accepts; ok is false for the others, which
// accept values without limit.
func (o *Operator) Values() (vals []string, ok bool) {
	switch o.kind {
	case opEquals:
		return []string{o.arg}, true
	case opIn:
		return o.set.List(), true
	}
	return nil, false
}

// IsRegexp reports whether the operator runs a regular expression (the costliest test).
func (o *Operator) IsRegexp() bool { return o.kind == opMatches }

// String is the operator as written: `equals "x"`.
func (o *Operator) String() string { return o.source }

var (
	_ fmt.Stringer = (*Value)(nil)
	_ fmt.Stringer = (*Operator)(nil)
)

// hasWord reports whether s has w as a space-separated word (an OAuth scope string).
func hasWord(s, w string) bool {
	if w == "" {
		return false
	}
	for s != "" {
		i := strings.Index(s, w)
		if i < 0 {
			return false
		}
		end := i + len(w)
		if (i == 0 || s[i-1] == ' ') && (end == len(s) || s[end] == ' ') {
			return true
		}
		s = s[i+1:]
	}
	return false
}
