//go:build !agentonly

package main

import (
	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/cli"
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
			return cli.PolicyLint(cmd.OutOrStdout(), cmd.ErrOrStderr(), args)
		},
	}
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

A token is given by its claims (jwt: {providers: [demo-idp], claims: {...}}), an API key by
what its provider binds to it (apiKey: {provider: clients, identity: batch, attributes: {...}}).
Failures are
explained rule by rule; the exit status is 1 when any test fails, as with "opa test".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cli.PolicyTest(cmd.Context(), cmd.OutOrStdout(), args[0], meshDir, verbose)
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
			return cli.PolicyExplain(cmd.Context(), cmd.OutOrStdout(), meshDir, requestFile, output)
		},
	}
	cmd.Flags().StringVar(&meshDir, "config", "", "directory of mesh documents (required)")
	cmd.Flags().StringVar(&requestFile, "request", "", "request file: YAML request or Envoy CheckRequest JSON (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("request")
	return cmd
}
