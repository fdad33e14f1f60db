package policytest

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/policy/explain"
	"github.com/portcullis/portcullis/xds/model"
)

// File is one file of policy tests (a file named *_test.yaml).
type File struct {
	// Mesh is the directory of mesh documents the tests run against, relative to the file;
	// Options.Mesh when empty.
	Mesh  string `yaml:"mesh"`
	Tests []Case `yaml:"tests"`
}

// Case is a request and the decision expected for it.
type Case struct {
	Name    string      `yaml:"name"`
	Request RequestSpec `yaml:"request"`
	Expect  Expectation `yaml:"expect"`
}

// Expectation is what a test expects. Decision is required; the rest is checked when given.
type Expectation struct {
	Decision model.Decision `yaml:"decision"`
	Code     policy.Code    `yaml:"code"`
	// Policy is "namespace/name", or "default" for the mesh default.
	Policy string `yaml:"policy"`
	Rule   string `yaml:"rule"`
}

// Options configure Run.
type Options struct {
	// LoadMesh loads and validates the mesh documents of a directory (cmd passes the file
	// source, so tests see exactly what the control plane would).
	LoadMesh func(dir string) (*model.Mesh, error)
	// Mesh is the directory used by test files that name none.
	Mesh string
	// Now is the request time of tests that give none.
	Now time.Time
}

// Result is the outcome of one test case.
type Result struct {
	File     string
	Name     string
	Pass     bool
	Failure  string
	Decision *policy.Decision
	// Explanation is set for failed tests whose request could be decided.
	Explanation *explain.Explanation
}

// Run runs every *_test.yaml (and *_test.yml) file under dir. The error is for what stops
// the run (no test files, a file that does not parse, a mesh that does not load); failed tests
// are results.
func Run(ctx context.Context, dir string, opts Options) ([]Result, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	files, err := testFiles(dir)
	if err != nil {
		return nil, err
	}
	engines := map[string]*policy.Engine{}
	var results []Result
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policytest: %w", err)
		}
		var tf File
		if err := decodeStrict(data, &tf); err != nil {
			return nil, fmt.Errorf("policytest: %s: %w", f, err)
		}
		meshDir := opts.Mesh
		if tf.Mesh != "" {
			meshDir = filepath.Join(filepath.Dir(f), tf.Mesh)
		}
		if meshDir == "" {
			return nil, fmt.Errorf("policytest: %s names no mesh directory (mesh: DIR) and none was given (--config)", f)
		}
		e, ok := engines[meshDir]
		if !ok {
			m, err := opts.LoadMesh(meshDir)
			if err != nil {
				return nil, fmt.Errorf("policytest: %s: mesh %s: %w", f, meshDir, err)
			}
			var ps model.Problems
			if e, ps = policy.Compile(m); ps != nil {
				return nil, fmt.Errorf("policytest: mesh %s: %w", meshDir, ps)
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
		return nil, fmt.Errorf("policytest: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policytest: no test files (*_test.yaml) under %s", dir)
	}
	slices.Sort(files)
	return files, nil
}

func runTest(ctx context.Context, e *policy.Engine, file string, tc *Case, i int, now time.Time) Result {
	res := Result{File: file, Name: tc.Name}
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
	x := explain.Decide(ctx, e, a)
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

// WriteReport writes results the way `opa test` does: a line per test (failures always,
// passes when verbose), the explanation of each failure, and totals. It returns the number of
// failures.
func WriteReport(w io.Writer, results []Result, verbose bool) (int, error) {
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
