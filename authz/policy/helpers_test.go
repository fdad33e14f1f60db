package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
	"github.com/portcullis/portcullis/xds/model"
)

func compile(t testing.TB, m *model.Mesh) *Engine {
	t.Helper()
	// A budget no test starved of CPU by the others runs out of; budget_test.go tests budgets.
	e, ps := NewCompiler(Options{RegoBudget: time.Minute}).Compile(m)
	if len(ps) > 0 {
		t.Fatalf("compile: %v", ps)
	}
	return e
}

// request returns attributes of a typical request from frontend to backend.
func request(t testing.TB) *Attributes {
	t.Helper()
	a := &Attributes{
		Destination: Destination{Service: "backend", Namespace: "demo", Port: 8080},
		Request: Request{
			Method: "GET", Path: "/api/items", Host: "backend.demo", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string][]string{"x-tenant": {"acme"}, "user-agent": {"test"}}, Time: testmesh.Monday10,
		},
	}
	a.Source.Address = netip.MustParseAddr("10.1.2.3")
	if err := a.Source.SetPrincipal("spiffe://portcullis.local/ns/demo/sa/frontend"); err != nil {
		t.Fatal(err)
	}
	return a
}

func token(t testing.TB, provider string, claims map[string]any) *jwt.Token {
	t.Helper()
	tok, err := jwt.NewToken([]string{provider}, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
