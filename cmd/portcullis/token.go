//go:build !agentonly

package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
)

type tokenFlags struct {
	dataDir, service, namespace, account, out string
	ttl                                       time.Duration
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func newTokenCommand(g *globals) *cobra.Command {
	root := &cobra.Command{Use: "token", Short: "Join tokens for workload agents", Args: cobra.NoArgs}
	f := &tokenFlags{}
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a join token bound to one workload's SPIFFE ID",
		Long: `Create a join token for spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, signed with
the control plane's token key in --data-dir (run it where the control plane's data directory is).
The token expires after --ttl and can be used once; it carries the SHA-256 pins of the trust
bundle's roots, so the agent can verify the control plane on first contact. Give it to
"portcullis agent --token-file". Treat it as a secret until it is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			token, tok, err := createToken(f)
			if err != nil {
				return err
			}
			g.log.Info("join token created", "spiffe_id", tok.SPIFFEID.String(), "token_id", tok.ID, "expires", tok.Expires.UTC().Format(time.RFC3339))
			if f.out != "" {
				return writeSecretFile(f.out, token+"\n")
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), token)
			return err
		},
	}
	fl := create.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", "the control plane's data directory (required)")
	fl.StringVar(&f.service, "service", "", "the workload's service (required)")
	fl.StringVar(&f.namespace, "namespace", "default", "the workload's namespace")
	fl.StringVar(&f.account, "service-account", "", "the workload's service account (default: the service name)")
	fl.DurationVar(&f.ttl, "ttl", attest.DefaultTokenTTL, fmt.Sprintf("how long the token may wait to be used (at most %s)", attest.MaxTokenTTL))
	fl.StringVar(&f.out, "out", "", "write the token to this file (mode 0600) instead of stdout")
	_ = create.MarkFlagRequired("data-dir")
	_ = create.MarkFlagRequired("service")
	root.AddCommand(create)
	return root
}

func createToken(f *tokenFlags) (string, *attest.Token, error) {
	if f.account == "" {
		f.account = f.service
	}
	for name, v := range map[string]string{"--service": f.service, "--namespace": f.namespace, "--service-account": f.account} {
		if !dnsLabel.MatchString(v) {
			return "", nil, fmt.Errorf("%s %q is not a DNS label (lower-case letters, digits and '-')", name, v)
		}
	}
	td, roots, err := ca.ReadBundle(f.dataDir, time.Now())
	if errors.Is(err, ca.ErrNoCA) {
		return "", nil, fmt.Errorf("%w: start the control plane with --data-dir %s first", err, f.dataDir)
	}
	if err != nil {
		return "", nil, err
	}
	id, err := spiffeid.FromSegments(td, "ns", f.namespace, "sa", f.account)
	if err != nil {
		return "", nil, err
	}
	pins := make([]string, len(roots))
	for i, r := range roots {
		pins[i] = ca.Pin(r)
	}
	key, err := attest.LoadOrCreateSigningKey(f.dataDir)
	if err != nil {
		return "", nil, err
	}
	return attest.Create(key, attest.Request{SPIFFEID: id, Service: f.service, TTL: f.ttl, Pins: pins})
}

// writeSecretFile creates (or truncates) path with mode 0600 whatever the umask, and refuses an
// existing file that others can read.
func writeSecretFile(path, content string) error {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s exists with mode %s; a token file must be private (0600)", path, st.Mode().Perm())
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	return errors.Join(err, f.Close())
}
