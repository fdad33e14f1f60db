//go:build !agentonly

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/cmd/internal/cli"
	"github.com/portcullis/portcullis/identity/ca"
)

func newCACommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "ca",
		Short: "Inspect and operate the control plane's CA (root rotation, revocation)",
		Long: `Operate the CA in a control plane's --data-dir, or with --kubernetes the CA Secret the control
plane's replicas share. A running control plane picks up what these commands write within a few
seconds. See docs/identity.md and docs/kubernetes.md.`,
		Args: cobra.NoArgs,
	}
	root.AddCommand(newCAStatusCommand(), newCARotateCommand(g), newCARevokeCommand(g))
	return root
}

// registerCATarget adds the flags saying where the CA is. nsFlag names the flag of the control
// plane's namespace (token create's --namespace is the workload's).
func registerCATarget(fl *pflag.FlagSet, t *cli.CATarget, nsFlag string) {
	fl.StringVar(&t.DataDir, "data-dir", "", "the control plane's data directory (give this or --kubernetes)")
	fl.BoolVar(&t.Kubernetes, "kubernetes", false, "use the CA Secret of the control plane on Kubernetes instead of a data directory")
	fl.StringVar(&t.Kubeconfig, "kubeconfig", "", "kubeconfig file, with --kubernetes (default: $KUBECONFIG or ~/.kube/config)")
	fl.StringVar(&t.Namespace, nsFlag, "portcullis-system", "the control plane's namespace, with --kubernetes")
	fl.StringVar(&t.Secret, "ca-secret", "portcullis-ca", "the control plane's CA Secret, with --kubernetes")
}

func newCAStatusCommand() *cobra.Command {
	var target cli.CATarget
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the CA's roots, their phases and lifetimes as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := target.Check(); err != nil {
				return err
			}
			st, err := target.Status(cmd.Context(), time.Now())
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
	registerCATarget(cmd.Flags(), &target, "namespace")
	return cmd
}

func newCARotateCommand(g *globals) *cobra.Command {
	var (
		target        cli.CATarget
		activateAfter time.Duration
		now           bool
		rootTTL       time.Duration
		intermTTL     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new root CA; it signs after every agent has learnt it, the old root stays trusted",
		Long: `Rotate the root CA in three phases, with no moment where a valid SVID is distrusted:

  prepared  the new root (and an intermediate under it) joins the trust bundle at once; agents
            fetch the bundle at their next renewal (half of the SVID TTL);
  active    after --activate-after (default: the longest SVID TTL) the new root signs;
  retired   the old root stays in the bundle until every SVID it signed has expired (the longest
            SVID TTL plus 5 minutes), then it is dropped.

--now activates the new root at once (for a compromised root): peers that have not renewed yet
will not trust SVIDs of the new root until they do.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if now && cmd.Flags().Changed("activate-after") {
				return errors.New("--now and --activate-after exclude each other")
			}
			if err := target.Check(); err != nil {
				return err
			}
			p, err := target.Rotate(cmd.Context(), ca.RotateOptions{ActivateAfter: activateAfter, Now: now, RootTTL: rootTTL, IntermediateTTL: intermTTL})
			if err != nil {
				return err
			}
			if now {
				g.log.Warn("new root active at once; peers trust it only after their next renewal")
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "new root %s: %s, signs from %s\n", p.ID, p.Phase, p.ActivateAt.UTC().Format(time.RFC3339))
			return err
		},
	}
	fl := cmd.Flags()
	registerCATarget(fl, &target, "namespace")
	fl.DurationVar(&activateAfter, "activate-after", 0, "how long the new root waits in the bundle before it signs (default: the longest SVID TTL)")
	fl.BoolVar(&now, "now", false, "activate the new root immediately")
	fl.DurationVar(&rootTTL, "root-ttl", ca.DefaultRootTTL, "lifetime of the new root")
	fl.DurationVar(&intermTTL, "intermediate-ttl", ca.DefaultIntermediateTTL, "lifetime of its first intermediate (on Kubernetes each replica issues its own with its --intermediate-ttl)")
	return cmd
}

func newCARevokeCommand(g *globals) *cobra.Command {
	var target cli.CATarget
	var serial, id, note string
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke an SVID by serial number, or every current SVID of a SPIFFE ID",
		Long: `Revoke an SVID: the control plane then refuses to renew it, and later the xDS server
refuses the proxy presenting it. --spiffe-id revokes every SVID of that ID issued up to now (to
the second); the workload can join again with a new token. Entries are pruned once every SVID
they could match has expired.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var n *big.Int
			var sid spiffeid.ID
			var err error
			switch {
			case (serial == "") == (id == ""):
				return errors.New("give exactly one of --serial and --spiffe-id")
			case serial != "":
				if n, err = ca.ParseSerial(serial); err != nil {
					return err
				}
			default:
				if sid, err = spiffeid.FromString(id); err != nil {
					return fmt.Errorf("--spiffe-id: %w", err)
				}
			}
			if err := target.Check(); err != nil {
				return err
			}
			r, err := target.Revoke(cmd.Context(), n, sid, note, time.Now())
			if err != nil {
				return err
			}
			g.log.Info("revoked", "serial", r.Serial, "spiffe_id", r.SPIFFEID, "listed_until", r.KeepUntil.Format(time.RFC3339))
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked %s%s (listed until %s)\n", r.Serial, r.SPIFFEID, r.KeepUntil.Format(time.RFC3339))
			return err
		},
	}
	fl := cmd.Flags()
	registerCATarget(fl, &target, "namespace")
	fl.StringVar(&serial, "serial", "", "serial number in hex (colons and 0x allowed), as Envoy's /certs or openssl print it")
	fl.StringVar(&id, "spiffe-id", "", "revoke every SVID of this SPIFFE ID issued up to now")
	fl.StringVar(&note, "note", "", "why, for the record in revoked.json")
	return cmd
}
