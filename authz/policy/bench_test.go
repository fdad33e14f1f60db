package policy

import (
	"context"
	"testing"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// benchEngine compiles the 50-rule benchmark mesh (ABAC rules, or the same rules in Rego) and
// returns a request only the last rule allows, with its token already verified.
func benchEngine(b *testing.B, rego bool) (*Engine, *Attributes) {
	b.Helper()
	key := authztest.NewKey(b, "ES256", "k1")
	docs, ps := source.Decode("bench.yaml", []byte(authztest.BenchMesh(authztest.JWKS(key), rego)))
	if len(ps) > 0 {
		b.Fatal(ps)
	}
	m, ps := model.Build(docs)
	if len(ps) > 0 {
		b.Fatal(ps)
	}
	e, ps := Compile(m)
	if len(ps) > 0 {
		b.Fatal(ps)
	}
	a := request(b)
	if err := a.Source.SetPrincipal(authztest.BenchPrincipal); err != nil {
		b.Fatal(err)
	}
	a.Request.Method, a.Request.Path = authztest.BenchMethod, authztest.BenchPath
	a.Request.Headers = map[string][]string{"x-tenant": {authztest.BenchTenant}, "user-agent": {"bench"}, "accept": {"*/*"}}
	tok, err := jwt.NewToken([]string{"demo/idp"}, authztest.BenchClaims())
	if err != nil {
		b.Fatal(err)
	}
	a.JWT = tok
	if d := e.Decide(context.Background(), a); !d.Allow || (!rego && d.Rule != "r49") {
		b.Fatalf("benchmark request not allowed by the last rule: %+v", d)
	}
	return e, a
}

// BenchmarkDecide50Rules is one decision against a 50-rule ABAC policy (plus a DENY policy),
// matched by the last rule, with the token verified (as the cache hands it over).
func BenchmarkDecide50Rules(b *testing.B) {
	e, a := benchEngine(b, false)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, a)
	}
}

// BenchmarkDecide50RulesRego is the same decision with the 50 rules as a Rego module on our
// engine (input document built from typed attributes, prepared query).
func BenchmarkDecide50RulesRego(b *testing.B) {
	e, a := benchEngine(b, true)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, a)
	}
}
