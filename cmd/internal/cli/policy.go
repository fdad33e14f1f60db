package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/policy/explain"
	"github.com/portcullis/portcullis/authz/policy/lint"
	"github.com/portcullis/portcullis/authz/policy/policytest"
	"github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// PolicyLint validates the mesh documents in args (files, or directories read like --config),
// compiles their Rego and finds rules that can never match; problems go to stdout, one per line,
// and make the error. Warnings (documents whose reach the namespace rules changed) are printed
// with them but are no error: the control plane accepts those documents too.
func PolicyLint(stdout, stderr io.Writer, args []string) error {
	files, err := yamlFiles(args)
	if err != nil {
		return err
	}
	var docs []model.Document
	var problems, warnings model.Problems
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("lint: %w", err)
		}
		ds, ps := source.Decode(f, data)
		docs, problems = append(docs, ds...), append(problems, ps...)
	}
	var mesh *model.Mesh
	hasMesh := slices.ContainsFunc(docs, func(d model.Document) bool { return d.Object.GetKind() == model.KindMesh })
	switch {
	case hasMesh && len(problems) == 0:
		m, ps := model.Build(docs)
		problems = append(problems, ps...)
		if m != nil {
			mesh = m
			problems = append(problems, jwt.Check(m)...)
			warnings = m.ReachWarnings()
		}
	default:
		problems = append(problems, model.CheckDocuments(docs)...)
		if !hasMesh {
			fmt.Fprintln(stderr, "note: no Mesh document among the files: references between documents and namespace reach were not checked")
		}
	}
	problems = append(problems, lint.Documents(docs, mesh)...)
	all := append(slices.Clone(problems), warnings...)
	all.Sort()
	for _, p := range all {
		fmt.Fprintln(stdout, p.String())
	}
	warned := ""
	if len(warnings) > 0 {
		warned = fmt.Sprintf(", %d warning(s)", len(warnings))
	}
	if len(problems) > 0 {
		return fmt.Errorf("lint: %d problem(s)%s in %d file(s)", len(problems), warned, len(files))
	}
	n := 0
	for _, d := range docs {
		if d.Object.GetKind() == model.KindAuthorizationPolicy {
			n++
		}
	}
	_, err = fmt.Fprintf(stdout, "ok: %d documents in %d files, %d authorization policies%s\n", len(docs), len(files), n, warned)
	return err
}

// yamlFiles expands directories into their *.yaml/*.yml files (hidden entries skipped).
func yamlFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("lint: %w", err)
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != a && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("lint: %w", err)
		}
	}
	return files, nil
}

// LoadMesh loads a directory of mesh documents the way the control plane does, with the same
// checks.
func LoadMesh(dir string) (*model.Mesh, error) {
	c := policy.NewCompiler(policy.Options{})
	d, err := source.NewDir(dir, source.DirOptions{Checks: []source.Checker{c.Check, jwt.Check}})
	if err != nil {
		return nil, err
	}
	if err := d.Load(); err != nil {
		return nil, err
	}
	m, _ := d.Current()
	return m, nil
}

// PolicyTest runs the policy test cases under dir (meshDir: the mesh of test files that name
// none) and reports them; failures make the error.
func PolicyTest(ctx context.Context, out io.Writer, dir, meshDir string, verbose bool) error {
	results, err := policytest.Run(ctx, dir, policytest.Options{LoadMesh: LoadMesh, Mesh: meshDir})
	if err != nil {
		return err
	}
	failed, err := policytest.WriteReport(out, results, verbose)
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("policy test: %d of %d failed", failed, len(results))
	}
	return nil
}

// PolicyExplain decides the request in requestFile against the mesh in meshDir and writes every
// policy and rule considered, as text or json.
func PolicyExplain(ctx context.Context, out io.Writer, meshDir, requestFile, format string) error {
	if format != "text" && format != "json" {
		return fmt.Errorf("explain: -o must be text or json, not %q", format)
	}
	m, err := LoadMesh(meshDir)
	if err != nil {
		return err
	}
	e, ps := policy.Compile(m)
	if ps != nil {
		return ps
	}
	data, err := os.ReadFile(requestFile)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	a, err := readRequest(data, time.Now())
	if err != nil {
		return fmt.Errorf("explain: %s: %w", requestFile, err)
	}
	x := explain.Decide(ctx, e, a)
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(x)
	}
	return x.WriteText(out)
}

// readRequest reads a request file: an Envoy CheckRequest (JSON or YAML with "attributes") or a
// policy test request.
func readRequest(data []byte, now time.Time) (*policy.Attributes, error) {
	var probe map[string]any
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return nil, err
	}
	if _, ok := probe["attributes"]; ok {
		js, err := json.Marshal(probe)
		if err != nil {
			return nil, err
		}
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(js, &req); err != nil {
			return nil, fmt.Errorf("not an Envoy CheckRequest: %w", err)
		}
		return server.Attributes(&req, now)
	}
	spec, err := policytest.ParseRequest(data)
	if err != nil {
		return nil, err
	}
	return spec.Attributes(now)
}
