//go:build !agentonly

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/cli"
	"github.com/portcullis/portcullis/identity/attest"
)

func newTokenCommand(g *globals) *cobra.Command {
	root := &cobra.Command{Use: "token", Short: "Join tokens for workload agents", Args: cobra.NoArgs}
	var r cli.TokenRequest
	var out string
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a join token bound to one workload's SPIFFE ID",
		Long: `Create a join token for spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, signed with
the control plane's token key: the one in --data-dir (run it where the control plane's data
directory is), or with --kubernetes the one in the CA Secret every replica verifies tokens with
(for a workload outside the cluster joining a control plane in it).
The token expires after --ttl and can be used once; it carries the SHA-256 pins of the trust
bundle's roots, so the agent can verify the control plane on first contact. Give it to
"portcullis agent --token-file". Treat it as a secret until it is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			token, tok, err := cli.CreateToken(cmd.Context(), r)
			if err != nil {
				return err
			}
			g.log.Info("join token created", "spiffe_id", tok.SPIFFEID.String(), "token_id", tok.ID, "expires", tok.Expires.UTC().Format(time.RFC3339))
			if out != "" {
				return cli.WriteSecretFile(out, token+"\n")
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), token)
			return err
		},
	}
	fl := create.Flags()
	registerCATarget(fl, &r.CA, "controlplane-namespace")
	fl.StringVar(&r.Service, "service", "", "the workload's service (required)")
	fl.StringVar(&r.Namespace, "namespace", "default", "the workload's namespace")
	fl.StringVar(&r.ServiceAccount, "service-account", "", "the workload's service account (default: the service name)")
	fl.DurationVar(&r.TTL, "ttl", attest.DefaultTokenTTL, fmt.Sprintf("how long the token may wait to be used (at most %s)", attest.MaxTokenTTL))
	fl.StringVar(&out, "out", "", "write the token to this file (mode 0600) instead of stdout")
	_ = create.MarkFlagRequired("service")
	root.AddCommand(create)
	return root
}
