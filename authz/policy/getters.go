package policy

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/policy/internal/pattern"
)

// getter reads one attribute; a compiled condition holds one.
type getter func(a *Attributes) pattern.Value

// str is a single-valued attribute, absent when empty.
func str(s string) pattern.Value { return pattern.Value{One: s, OK: s != ""} }

// getterFor compiles an attribute path (validated by model.ValidAttributePath) into a getter.
func getterFor(path string) (getter, error) {
	switch path {
	case "source.principal":
		return func(a *Attributes) pattern.Value { return str(a.Source.Principal) }, nil
	case "source.namespace":
		return func(a *Attributes) pattern.Value { return str(a.Source.Namespace) }, nil
	case "source.serviceAccount":
		return func(a *Attributes) pattern.Value { return str(a.Source.ServiceAccount) }, nil
	case "source.trustDomain":
		return func(a *Attributes) pattern.Value { return str(a.Source.TrustDomain) }, nil
	case "source.address":
		return func(a *Attributes) pattern.Value {
			if !a.Source.Address.IsValid() {
				return pattern.Value{}
			}
			return str(a.Source.Address.Unmap().String())
		}, nil
	case "destination.service":
		return func(a *Attributes) pattern.Value { return str(a.Destination.Service) }, nil
	case "destination.namespace":
		return func(a *Attributes) pattern.Value { return str(a.Destination.Namespace) }, nil
	case "destination.principal":
		return func(a *Attributes) pattern.Value { return str(a.Destination.Principal) }, nil
	case "destination.port":
		return func(a *Attributes) pattern.Value { return str(portString(a.Destination.Port)) }, nil
	case "request.method":
		return func(a *Attributes) pattern.Value { return str(a.Request.Method) }, nil
	case "request.path":
		return func(a *Attributes) pattern.Value { return str(a.Request.Path) }, nil
	case "request.host":
		return func(a *Attributes) pattern.Value { return str(a.Request.Host) }, nil
	case "request.scheme":
		return func(a *Attributes) pattern.Value { return str(a.Request.Scheme) }, nil
	case "request.protocol":
		return func(a *Attributes) pattern.Value { return str(a.Request.Protocol) }, nil
	case "request.sni":
		return func(a *Attributes) pattern.Value { return str(a.Request.SNI) }, nil
	case "request.time":
		return func(a *Attributes) pattern.Value {
			if a.Request.Time.IsZero() {
				return pattern.Value{}
			}
			return str(a.Request.Time.UTC().Format(time.RFC3339))
		}, nil
	case "jwt.issuer":
		return func(a *Attributes) pattern.Value {
			if a.JWT == nil {
				return pattern.Value{}
			}
			return str(a.JWT.Issuer)
		}, nil
	case "jwt.providers":
		return func(a *Attributes) pattern.Value {
			if a.JWT == nil || len(a.JWT.Providers) == 0 {
				return pattern.Value{}
			}
			return pattern.Value{Many: a.JWT.Providers, List: true, OK: true}
		}, nil
	case "jwt.subject":
		return func(a *Attributes) pattern.Value {
			if a.JWT == nil {
				return pattern.Value{}
			}
			return str(a.JWT.Subject)
		}, nil
	case "apiKey.id":
		return apiKeyField(func(k *apikey.Key) string { return k.ID }), nil
	case "apiKey.identity":
		return apiKeyField(func(k *apikey.Key) string { return k.Identity }), nil
	case "apiKey.provider":
		return apiKeyField(func(k *apikey.Key) string { return k.Provider }), nil
	}
	if name, ok := strings.CutPrefix(path, "apiKey.attributes."); ok {
		return apiKeyAttribute(name), nil
	}
	if name, ok := strings.CutPrefix(path, "request.headers."); ok {
		name = strings.ToLower(name)
		return func(a *Attributes) pattern.Value { return headerValue(a.Request.Headers[name]) }, nil
	}
	if name, ok := strings.CutPrefix(path, "request.query."); ok {
		return func(a *Attributes) pattern.Value {
			if a.Request.Query == "" {
				return pattern.Value{}
			}
			// Parsed per use: query conditions are rare. The server refuses requests whose
			// query does not parse, so an error here means attributes from elsewhere; the
			// parameter is then absent rather than guessed.
			q, err := url.ParseQuery(a.Request.Query)
			if err != nil {
				return pattern.Value{}
			}
			vals, ok := q[name]
			if !ok {
				return pattern.Value{}
			}
			if len(vals) == 1 {
				return pattern.Value{One: vals[0], OK: true}
			}
			return pattern.Value{Many: vals, List: true, OK: true}
		}, nil
	}
	if claim, ok := strings.CutPrefix(path, "jwt.claims."); ok {
		return claimGetter(claim), nil
	}
	return nil, fmt.Errorf("unknown attribute %q", path)
}

func claimGetter(claim string) getter {
	return func(a *Attributes) pattern.Value {
		if a.JWT == nil {
			return pattern.Value{}
		}
		cv, ok := a.JWT.Claims.Get(claim)
		if !ok || (len(cv.Values) == 0 && !cv.List) {
			return pattern.Value{}
		}
		if cv.List {
			return pattern.Value{Many: cv.Values, List: true, OK: true}
		}
		return pattern.Value{One: cv.Values[0], OK: true}
	}
}

// headerValue is a header's values as an attribute: absent, one value, or a list when the header
// came more than once (each value is tested, never the values joined).
func headerValue(vals []string) pattern.Value {
	switch len(vals) {
	case 0:
		return pattern.Value{}
	case 1:
		return pattern.Value{One: vals[0], OK: true}
	}
	return pattern.Value{Many: vals, List: true, Lines: true, OK: true}
}
