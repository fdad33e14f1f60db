//go:build !agentonly

package main

import (
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
	"github.com/spf13/cobra"
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

func newPolicyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Authoring tools for authorization policies: lint, test, explain",
		Long: `Tools for writing AuthorizationPolicy documents (docs/policies.md):

  portcullis policy lint FILES...                      validate, compile Rego, find rules that can never match
  portcullis policy test DIR                           run YAML test cases (*_test.yaml); non-zero exit on failure
  portcullis policy explain --config DIR --request F   every policy and rule considered for one request`,
	}
	cmd.AddCommand(newPolicyLintCommand(g), newPolicyTestCommand(g), newPolicyExplainCommand(g))
	return cmd
}

func newPolicyLintCommand(_ *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "lint FILE|DIR...",
		Short: "Validate mesh documents and lint their policies",
		Long: `Validate mesh documents (every problem at once, with file, document, field and line),
compile every Rego module (errors with their Rego line), and find rules that can never match
(methods all excluded by notMethods, contradictory conditions, ports the service does not have,
...). Directories are read like --config (every *.yaml/*.yml). When the files include the Mesh
document, references between documents are checked too. Exits 1 when anything is found.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPolicyLint(cmd.OutOrStdout(), cmd.ErrOrStderr(), args)
		},
	}
}

func runPolicyLint(stdout, stderr io.Writer, args []string) error {
	files, err := yamlFiles(args)
	if err != nil {
		return err
	}
	var docs []model.Document
	var problems model.Problems
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("lint: %w", err)
		}
		ds, ps := source.Decode(f, data)
		docs, problems = append(docs, ds...), append(problems, ps...)
	}
	var services lint.ServiceLookup
	hasMesh := slices.ContainsFunc(docs, func(d model.Document) bool { return d.Object.GetKind() == model.KindMesh })
	switch {
	case hasMesh && len(problems) == 0:
		m, ps := model.Build(docs)
		problems = append(problems, ps...)
		if m != nil {
			services = m.Service
			problems = append(problems, jwt.Check(m)...)
		}
	default:
		problems = append(problems, model.CheckDocuments(docs)...)
		if !hasMesh {
			fmt.Fprintln(stderr, "note: no Mesh document among the files: references between documents were not checked")
		}
	}
	problems = append(problems, lint.Documents(docs, services)...)
	problems.Sort()
	for _, p := range problems {
		fmt.Fprintln(stdout, p.String())
	}
	if len(problems) > 0 {
		return fmt.Errorf("lint: %d problem(s) in %d file(s)", len(problems), len(files))
	}
	n := 0
	for _, d := range docs {
		if d.Object.GetKind() == model.KindAuthorizationPolicy {
			n++
		}
	}
	_, err = fmt.Fprintf(stdout, "ok: %d documents in %d files, %d authorization policies\n", len(docs), len(files), n)
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

// loadMesh loads a directory of mesh documents the way the control plane does, with the same
// checks.
func loadMesh(dir string) (*model.Mesh, error) {
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

func newPolicyTestCommand(_ *globals) *cobra.Command {
	var meshDir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "test DIR",
		Short: "Run policy test cases (*_test.yaml files)",
		Long: `Run the policy test cases in every *_test.yaml under DIR. A test file names the mesh it tests
(mesh: DIR, relative to the file; or --config) and lists requests with the decision expected:

  mesh: ../mesh
  tests:
    - name: frontend may read
      request:
        source: {principal: spiffe://portcullis.local/ns/demo/sa/frontend}
        destination: {service: backend, namespace: demo}
        method: GET
        path: /api/items
      expect: {decision: ALLOW, policy: demo/backend-allow-frontend, rule: frontend-reads}

A token is given by its claims (jwt: {providers: [demo-idp], claims: {...}}). Failures are
explained rule by rule; the exit status is 1 when any test fails, as with "opa test".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			results, err := policytest.Run(cmd.Context(), args[0], policytest.Options{LoadMesh: loadMesh, Mesh: meshDir})
			if err != nil {
				return err
			}
			failed, err := policytest.WriteReport(cmd.OutOrStdout(), results, verbose)
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("policy test: %d of %d failed", failed, len(results))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&meshDir, "config", "", "mesh directory for test files that name none")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list passing tests too")
	return cmd
}

func newPolicyExplainCommand(_ *globals) *cobra.Command {
	var meshDir, requestFile, output string
	cmd := &cobra.Command{
		Use:   "explain --config DIR --request FILE",
		Short: "Explain the decision for one request: every policy and rule considered",
		Long: `Decide one request against the mesh in --config and show every policy: whether it applies
to the destination, which rule matched, and for every rule that did not, which part failed and
why. The request is a YAML request (the "request" of a policy test) or an Envoy CheckRequest in
JSON (e.g. captured from a proxy), recognised by its "attributes" field.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := loadMesh(meshDir)
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
			x := explain.Decide(cmd.Context(), e, a)
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(x)
			case "text":
				return x.WriteText(cmd.OutOrStdout())
			}
			return fmt.Errorf("explain: -o must be text or json, not %q", output)
		},
	}
	cmd.Flags().StringVar(&meshDir, "config", "", "directory of mesh documents (required)")
	cmd.Flags().StringVar(&requestFile, "request", "", "request file: YAML request or Envoy CheckRequest JSON (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("request")
	return cmd
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
