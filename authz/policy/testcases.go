package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/xds/model"
)

// RequestSpec is a request written in YAML, for policy tests and `portcullis policy explain`:
//
//	source: {principal: spiffe://portcullis.local/ns/demo/sa/frontend, address: 10.0.0.7}
//	destination: {service: backend, namespace: demo, port: 8080}
//	method: GET
//	path: /api/items?page=2
//	headers: {x-tenant: acme}
//	time: 2026-01-05T10:00:00Z
//	jwt: {providers: [demo-idp], claims: {sub: alice, realm_access: {roles: [admin]}}}
type RequestSpec struct {
	Source struct {
		Principal string `yaml:"principal" json:"principal,omitempty"`
		Address   string `yaml:"address" json:"address,omitempty"`
	} `yaml:"source" json:"source"`
	Destination struct {
		Service   string `yaml:"service" json:"service,omitempty"`
		Namespace string `yaml:"namespace" json:"namespace,omitempty"`
		Principal string `yaml:"principal" json:"principal,omitempty"`
		Port      uint32 `yaml:"port" json:"port,omitempty"`
	} `yaml:"destination" json:"destination"`
	// Method is GET and Path "/" unless set; Path may carry a query and is normalised like a
	// real request's.
	Method   string            `yaml:"method" json:"method,omitempty"`
	Path     string            `yaml:"path" json:"path,omitempty"`
	Host     string            `yaml:"host" json:"host,omitempty"`
	Scheme   string            `yaml:"scheme" json:"scheme,omitempty"`
	Protocol string            `yaml:"protocol" json:"protocol,omitempty"`
	SNI      string            `yaml:"sni" json:"sni,omitempty"`
	Headers  map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Time is RFC 3339; the time of the run unless set.
	Time string   `yaml:"time" json:"time,omitempty"`
	JWT  *JWTSpec `yaml:"jwt" json:"jwt,omitempty"`
}

// JWTSpec is a verified token given by its claims: tests say what a token asserts, not how it
// is signed (JWT verification has tests of its own).
type JWTSpec struct {
	// Providers that verified it: "name" (in the destination's namespace) or "namespace/name".
	Providers []string       `yaml:"providers" json:"providers"`
	Claims    map[string]any `yaml:"claims" json:"claims"`
}

// Attributes turns the spec into request attributes.
func (r *RequestSpec) Attributes(now time.Time) (*Attributes, error) {
	a := &Attributes{}
	if err := a.Source.SetPrincipal(r.Source.Principal); err != nil {
		return nil, fmt.Errorf("source.principal: %w", err)
	}
	if r.Source.Address != "" {
		addr, err := netip.ParseAddr(r.Source.Address)
		if err != nil {
			return nil, fmt.Errorf("source.address: %w", err)
		}
		a.Source.Address = addr
	}
	a.Destination.Service = r.Destination.Service
	a.Destination.Namespace = r.Destination.Namespace
	if a.Destination.Namespace == "" {
		a.Destination.Namespace = model.DefaultNamespace
	}
	a.Destination.Principal, a.Destination.Port = r.Destination.Principal, r.Destination.Port
	a.Request.Method = strings.ToUpper(r.Method)
	if a.Request.Method == "" {
		a.Request.Method = "GET"
	}
	target := r.Path
	if target == "" {
		target = "/"
	}
	var err error
	if a.Request.Path, a.Request.Query, err = NormalizePath(target); err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	a.Request.Host = HostWithoutPort(r.Host)
	a.Request.Scheme, a.Request.Protocol, a.Request.SNI = r.Scheme, r.Protocol, r.SNI
	a.Request.Headers = make(map[string]string, len(r.Headers))
	for k, v := range r.Headers {
		a.Request.Headers[strings.ToLower(k)] = v
	}
	a.Request.Time = now
	if r.Time != "" {
		if a.Request.Time, err = time.Parse(time.RFC3339, r.Time); err != nil {
			return nil, fmt.Errorf("time: %w", err)
		}
	}
	if j := r.JWT; j != nil {
		providers := make([]string, len(j.Providers))
		for i, p := range j.Providers {
			if !strings.Contains(p, "/") {
				p = a.Destination.Namespace + "/" + p
			}
			providers[i] = p
		}
		if a.JWT, err = jwt.NewToken(providers, j.Claims); err != nil {
			return nil, fmt.Errorf("jwt: %w", err)
		}
	}
	return a, nil
}

// ParseRequest reads a RequestSpec from YAML (or JSON), rejecting unknown fields.
func ParseRequest(data []byte) (*RequestSpec, error) {
	var r RequestSpec
	if err := decodeStrict(data, &r); err != nil {
		return nil, fmt.Errorf("policy: request: %w", err)
	}
	return &r, nil
}

func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty document")
		}
		return err
	}
	return nil
}

// TestFile is one file of policy tests (a file named *_test.yaml).
type TestFile struct {
	// Mesh is the directory of mesh documents the tests run against, relative to the file;
	// TestOptions.Mesh when empty.
	Mesh  string     `yaml:"mesh"`
	Tests []TestCase `yaml:"tests"`
}

// TestCase is a request and the decision expected for it.
type TestCase struct {
	Name    string      `yaml:"name"`
	Request RequestSpec `yaml:"request"`
	Expect  Expectation `yaml:"expect"`
}

// Expectation is what a test expects. Decision is required; the rest is checked when given.
type Expectation struct {
	Decision model.Decision `yaml:"decision"`
	Code     Code           `yaml:"code"`
	// Policy is "namespace/name", or "default" for the mesh default.
	Policy string `yaml:"policy"`
	Rule   string `yaml:"rule"`
}

// TestOptions configure RunTests.
type TestOptions struct {
	// LoadMesh loads and validates the mesh documents of a directory (cmd passes the file
	// source, so tests see exactly what the control plane would).
	LoadMesh func(dir string) (*model.Mesh, error)
	// Mesh is the directory used by test files that name none.
	Mesh string
	// Now is the request time of tests that give none.
	Now time.Time
}

// TestResult is the outcome of one test case.
type TestResult struct {
	File     string
	Name     string
	Pass     bool
	Failure  string
	Decision *Decision
	// Explanation is set for failed tests whose request could be decided.
	Explanation *Explanation
}

// RunTests runs every *_test.yaml (and *_test.yml) file under dir. The error is for what stops
// the run (no test files, a file that does not parse, a mesh that does not load); failed tests
// are results.
func RunTests(ctx context.Context, dir string, opts TestOptions) ([]TestResult, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	files, err := testFiles(dir)
	if err != nil {
		return nil, err
	}
	engines := map[string]*Engine{}
	var results []TestResult
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		var tf TestFile
		if err := decodeStrict(data, &tf); err != nil {
			return nil, fmt.Errorf("policy: %s: %w", f, err)
		}
		meshDir := opts.Mesh
		if tf.Mesh != "" {
			meshDir = filepath.Join(filepath.Dir(f), tf.Mesh)
		}
		if meshDir == "" {
			return nil, fmt.Errorf("policy: %s names no mesh directory (mesh: DIR) and none was given (--config)", f)
		}
		e, ok := engines[meshDir]
		if !ok {
			m, err := opts.LoadMesh(meshDir)
			if err != nil {
				return nil, fmt.Errorf("policy: %s: mesh %s: %w", f, meshDir, err)
			}
			var ps model.Problems
			if e, ps = Compile(m); ps != nil {
				return nil, fmt.Errorf("policy: mesh %s: %w", meshDir, ps)
			}
			engines[meshDir] = e
		}
		for i := range tf.Tests {
			results = append(results, runTest(ctx, e, f, &tf.Tests[i], i, opts.Now))
		}
	}
	return results, nil
}

func testFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, "_test.yaml") || strings.HasSuffix(path, "_test.yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy: no test files (*_test.yaml) under %s", dir)
	}
	slices.Sort(files)
	return files, nil
}

func runTest(ctx context.Context, e *Engine, file string, tc *TestCase, i int, now time.Time) TestResult {
	res := TestResult{File: file, Name: tc.Name}
	if res.Name == "" {
		res.Name = fmt.Sprintf("tests[%d]", i)
	}
	want := &tc.Expect
	if want.Decision != model.DecisionAllow && want.Decision != model.DecisionDeny {
		res.Failure = fmt.Sprintf("expect.decision must be ALLOW or DENY, not %q", want.Decision)
		return res
	}
	a, err := tc.Request.Attributes(now)
	if err != nil {
		res.Failure = "request: " + err.Error()
		return res
	}
	x := e.Explain(ctx, a)
	d := &x.Decision
	res.Decision = d
	var diffs []string
	if d.Outcome() != want.Decision {
		diffs = append(diffs, fmt.Sprintf("decision %s, want %s", d.Outcome(), want.Decision))
	}
	if want.Code != "" && d.Code != want.Code {
		diffs = append(diffs, fmt.Sprintf("code %s, want %s", d.Code, want.Code))
	}
	gotPolicy := d.Policy
	if gotPolicy == "" {
		gotPolicy = "default"
	}
	if want.Policy != "" && gotPolicy != want.Policy {
		diffs = append(diffs, fmt.Sprintf("policy %s, want %s", gotPolicy, want.Policy))
	}
	if want.Rule != "" && d.Rule != want.Rule {
		diffs = append(diffs, fmt.Sprintf("rule %q, want %q", d.Rule, want.Rule))
	}
	if len(diffs) > 0 {
		res.Failure = strings.Join(diffs, "; ")
		res.Explanation = x
		return res
	}
	res.Pass = true
	return res
}

// WriteTestReport writes results the way `opa test` does: a line per test (failures always,
// passes when verbose), the explanation of each failure, and totals. It returns the number of
// failures.
func WriteTestReport(w io.Writer, results []TestResult, verbose bool) (int, error) {
	var b strings.Builder
	failed := 0
	for _, r := range results {
		if r.Pass {
			if verbose {
				fmt.Fprintf(&b, "PASS %s: %s\n", r.File, r.Name)
			}
			continue
		}
		failed++
		fmt.Fprintf(&b, "FAIL %s: %s\n  %s\n", r.File, r.Name, r.Failure)
		if r.Explanation != nil {
			var x strings.Builder
			if err := r.Explanation.WriteText(&x); err != nil {
				return failed, err
			}
			b.WriteString("  " + strings.ReplaceAll(strings.TrimRight(x.String(), "\n"), "\n", "\n  ") + "\n")
		}
	}
	b.WriteString(strings.Repeat("-", 80) + "\n")
	if n := len(results) - failed; n > 0 {
		fmt.Fprintf(&b, "PASS: %d/%d\n", n, len(results))
	}
	if failed > 0 {
		fmt.Fprintf(&b, "FAIL: %d/%d\n", failed, len(results))
	}
	_, err := io.WriteString(w, b.String())
	return failed, err
}
