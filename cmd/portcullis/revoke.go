//go:build !agentonly

package main

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/cli"
	"github.com/portcullis/portcullis/xds/model"
)

func newRevokeCommand(_ *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke leaked credentials before they expire (CredentialRevocation documents)",
		Long: `Edit a CredentialRevocation file in the mesh directory (docs/documents.md): every control plane
and authz replica watching the directory refuses the revoked tokens with 401 "revoked" once it
reloads (within 2 s). On Kubernetes, apply the file: it is the CredentialRevocation resource.

  portcullis revoke jwt --file mesh/revocations.yaml --issuer I --jti J --expires T
  portcullis revoke jwt --file mesh/revocations.yaml --token-file leaked.jwt
  portcullis revoke jwt --file mesh/revocations.yaml --issuer I --subject S --issued-before now --expires 12h
  portcullis revoke list --file mesh/revocations.yaml`,
		Args: cobra.NoArgs,
	}
	root.AddCommand(newRevokeJWTCommand(), newRevokeListCommand())
	return root
}

func newRevokeJWTCommand() *cobra.Command {
	var (
		r                       cli.RevokeJWTRequest
		issuedBefore, expiresAt string
		noCheck                 bool
	)
	cmd := &cobra.Command{
		Use:   "jwt",
		Short: "Revoke one token (--jti) or every token of a subject issued before a time",
		Long: `Add an entry to the CredentialRevocation in --file (created when missing), drop the entries that
have expired, and replace the file atomically, so a watching control plane never reads half of it.

One token: --issuer and --jti, with --expires its own expiry (the entry may go then). Or read
them from the token with --token-file: the token is decoded WITHOUT verifying it, since it only
chooses what to revoke.
Every token of a subject ("log out everywhere"): --issuer, --subject and --issued-before (the
subject's tokens issued before it, and its tokens without iat, are refused), with --expires the
issued-before time plus the longest lifetime the issuer gives tokens.

Times are RFC 3339 ("2026-12-05T14:00:00Z"), "now", or a duration from now ("12h").
--namespace sets the new file's namespace: the root namespace's revocations apply to every
token; another namespace's only to the tokens its own JWTProviders verify. After writing, the
command loads the file's directory (or --config) as the control plane would, and fails if the
mesh does not load: the revocation would not be in force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r.Now = time.Now()
			ib, err := cli.ParseTimeFlag("issued-before", issuedBefore, r.Now)
			if err != nil {
				return err
			}
			r.Entry.IssuedBefore = ib
			exp, err := cli.ParseTimeFlag("expires", expiresAt, r.Now)
			if err != nil {
				return err
			}
			if exp != nil {
				r.Entry.Expires = *exp
			}
			if r.TokenFile == "" && r.Entry.Issuer == "" {
				return errors.New("--issuer or --token-file is required")
			}
			switch {
			case noCheck:
				r.ConfigDir = ""
			case r.ConfigDir == "":
				r.ConfigDir = filepath.Dir(r.File)
			}
			return cli.RevokeJWT(cmd.OutOrStdout(), r)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&r.File, "file", "", "the revocation file (required)")
	fl.StringVar(&r.Namespace, "namespace", "", "the namespace of a new file's CredentialRevocation (default "+model.DefaultRootNamespace+", the default root namespace)")
	fl.StringVar(&r.Name, "name", cli.DefaultRevocationName, "the name of a new file's CredentialRevocation")
	fl.StringVar(&r.Entry.Issuer, "issuer", "", "the tokens' iss")
	fl.StringVar(&r.Entry.JTI, "jti", "", "the revoked token's jti")
	fl.StringVar(&r.Entry.Subject, "subject", "", "revoke every token of this sub issued before --issued-before")
	fl.StringVar(&issuedBefore, "issued-before", "", "with --subject: revoke its tokens issued before this time")
	fl.StringVar(&expiresAt, "expires", "", "when the entry may go: the token's exp, or issued-before plus the longest token lifetime")
	fl.StringVar(&r.Entry.Reason, "reason", "", "free text for the decision log (not a secret)")
	fl.StringVar(&r.TokenFile, "token-file", "", "read iss, jti and exp from this token (not verified)")
	fl.StringVar(&r.ConfigDir, "config", "", "the mesh directory to check the result against (default: the file's directory)")
	fl.BoolVar(&noCheck, "no-check", false, "do not load the mesh directory after writing")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func newRevokeListCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the entries of a revocation file, live or expired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cli.ListRevocations(cmd.OutOrStdout(), file, time.Now())
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "the revocation file (required)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}
