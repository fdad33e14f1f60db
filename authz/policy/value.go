package policy

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// value is an attribute's value: one string, or several (a list claim, a repeated query
// parameter). It is passed by value so reading an attribute does not allocate.
type value struct {
	one  string
	many []string
	list bool // many holds the value (it was a JSON array or repeated)
	ok   bool // the attribute is present
}

func (v value) each(f func(string) bool) bool {
	if !v.ok {
		return false
	}
	if v.list {
		for _, s := range v.many {
			if f(s) {
				return true
			}
		}
		return false
	}
	return f(v.one)
}

func (v value) String() string {
	switch {
	case !v.ok:
		return "absent"
	case v.list:
		return fmt.Sprintf("%q", v.many)
	}
	return fmt.Sprintf("%q", v.one)
}

type getter func(a *Attributes) value

func str(s string) value { return value{one: s, ok: s != ""} }

// getterFor compiles an attribute path (validated by model.ValidAttributePath) into a getter.
func getterFor(path string) (getter, error) {
	switch path {
	case "source.principal":
		return func(a *Attributes) value { return str(a.Source.Principal) }, nil
	case "source.namespace":
		return func(a *Attributes) value { return str(a.Source.Namespace) }, nil
	case "source.serviceAccount":
		return func(a *Attributes) value { return str(a.Source.ServiceAccount) }, nil
	case "source.trustDomain":
		return func(a *Attributes) value { return str(a.Source.TrustDomain) }, nil
	case "source.address":
		return func(a *Attributes) value {
			if !a.Source.Address.IsValid() {
				return value{}
			}
			return str(a.Source.Address.Unmap().String())
		}, nil
	case "destination.service":
		return func(a *Attributes) value { return str(a.Destination.Service) }, nil
	case "destination.namespace":
		return func(a *Attributes) value { return str(a.Destination.Namespace) }, nil
	case "destination.principal":
		return func(a *Attributes) value { return str(a.Destination.Principal) }, nil
	case "destination.port":
		return func(a *Attributes) value { return str(portString(a.Destination.Port)) }, nil
	case "request.method":
		return func(a *Attributes) value { return str(a.Request.Method) }, nil
	case "request.path":
		return func(a *Attributes) value { return str(a.Request.Path) }, nil
	case "request.host":
		return func(a *Attributes) value { return str(a.Request.Host) }, nil
	case "request.scheme":
		return func(a *Attributes) value { return str(a.Request.Scheme) }, nil
	case "request.protocol":
		return func(a *Attributes) value { return str(a.Request.Protocol) }, nil
	case "request.sni":
		return func(a *Attributes) value { return str(a.Request.SNI) }, nil
	case "request.time":
		return func(a *Attributes) value {
			if a.Request.Time.IsZero() {
				return value{}
			}
			return str(a.Request.Time.UTC().Format(time.RFC3339))
		}, nil
	case "jwt.issuer":
		return func(a *Attributes) value {
			if a.JWT == nil {
				return value{}
			}
			return str(a.JWT.Issuer)
		}, nil
	case "jwt.providers":
		return func(a *Attributes) value {
			if a.JWT == nil || len(a.JWT.Providers) == 0 {
				return value{}
			}
			return value{many: a.JWT.Providers, list: true, ok: true}
		}, nil
	case "jwt.subject":
		return func(a *Attributes) value {
			if a.JWT == nil {
				return value{}
			}
			return str(a.JWT.Subject)
		}, nil
	}
	if name, ok := strings.CutPrefix(path, "request.headers."); ok {
		name = strings.ToLower(name)
		return func(a *Attributes) value {
			v, ok := a.Request.Headers[name]
			return value{one: v, ok: ok}
		}, nil
	}
	if name, ok := strings.CutPrefix(path, "request.query."); ok {
		return func(a *Attributes) value {
			if a.Request.Query == "" {
				return value{}
			}
			// Parsed per use: query conditions are rare. The server refuses requests whose
			// query does not parse, so an error here means attributes from elsewhere; the
			// parameter is then absent rather than guessed.
			q, err := url.ParseQuery(a.Request.Query)
			if err != nil {
				return value{}
			}
			vals, ok := q[name]
			if !ok {
				return value{}
			}
			if len(vals) == 1 {
				return value{one: vals[0], ok: true}
			}
			return value{many: vals, list: true, ok: true}
		}, nil
	}
	if claim, ok := strings.CutPrefix(path, "jwt.claims."); ok {
		return claimGetter(claim), nil
	}
	return nil, fmt.Errorf("unknown attribute %q", path)
}

func claimGetter(claim string) getter {
	return func(a *Attributes) value {
		if a.JWT == nil {
			return value{}
		}
		cv, ok := a.JWT.Claims.Get(claim)
		if !ok || (len(cv.Values) == 0 && !cv.List) {
			return value{}
		}
		if cv.List {
			return value{many: cv.Values, list: true, ok: true}
		}
		return value{one: cv.Values[0], ok: true}
	}
}

// operator is a compiled ValueMatch.
type operator struct {
	kind   string // equals, in, contains, matches
	arg    string
	set    stringSet
	re     *regexp.Regexp
	source string // for explanations
}

func compileOperator(v *model.ValueMatch) (operator, error) {
	switch {
	case v.Equals != nil:
		return operator{kind: "equals", arg: *v.Equals, source: fmt.Sprintf("equals %q", *v.Equals)}, nil
	case v.In != nil:
		return operator{kind: "in", set: newStringSet(v.In), source: fmt.Sprintf("in %q", v.In)}, nil
	case v.Contains != nil:
		return operator{kind: "contains", arg: *v.Contains, source: fmt.Sprintf("contains %q", *v.Contains)}, nil
	case v.Matches != nil:
		// Anchored: "matches" means the whole value, not a substring.
		re, err := regexp.Compile(`^(?:` + *v.Matches + `)$`)
		if err != nil {
			return operator{}, err
		}
		return operator{kind: "matches", re: re, source: fmt.Sprintf("matches %q", *v.Matches)}, nil
	}
	return operator{}, fmt.Errorf("no operator")
}

func (o *operator) test(v value) bool {
	switch o.kind {
	case "equals":
		return v.each(func(s string) bool { return s == o.arg })
	case "in":
		return v.each(o.set.has)
	case "contains":
		if v.list {
			return v.each(func(s string) bool { return s == o.arg })
		}
		return v.ok && hasWord(v.one, o.arg)
	case "matches":
		return v.each(o.re.MatchString)
	}
	return false
}

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

// valueCond tests one attribute (or claim) with one operator.
type valueCond struct {
	path string // field path in the rule, for explanations
	attr string // attribute path
	get  getter
	op   operator
}

func (c *valueCond) match(a *Attributes) bool { return c.op.test(c.get(a)) }
func (c *valueCond) field() string            { return c.path }
func (c *valueCond) cost() int {
	if c.op.kind == "matches" {
		return costRegexp
	}
	return costValue
}
func (c *valueCond) explain(a *Attributes) string {
	return fmt.Sprintf("%s is %s, which does not satisfy %s", c.attr, c.get(a), c.op.source)
}
