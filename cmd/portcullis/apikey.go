//go:build !agentonly

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/portcullis/portcullis/cmd/internal/cli"
)

func newAPIKeyCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "apikey",
		Short: "API keys of an APIKeyProvider document: create, rotate, revoke",
		Long: `Edit the keys of an APIKeyProvider document in a mesh file (docs/documents.md). The file is
checked as the control plane would load it and replaced atomically, so a control plane watching
the directory sees the old file or the new one. Only the key's salted hash is written; create and
rotate print the key itself once, on stdout, and nowhere else: give it to the client then.`,
		Args: cobra.NoArgs,
	}
	fileFlags := func(fl *pflag.FlagSet, f *cli.APIKeyFile) {
		fl.StringVar(&f.File, "file", "", "the mesh file holding the APIKeyProvider (required; create makes it)")
		fl.StringVar(&f.Provider, "provider", "", "the APIKeyProvider's name (required)")
		fl.StringVar(&f.Namespace, "namespace", "default", "the APIKeyProvider's namespace")
	}
	var r cli.APIKeyRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Add a key for an identity and print it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r.Now = time.Now()
			key, id, err := cli.CreateAPIKey(r)
			if err != nil {
				return err
			}
			g.log.Info("API key created", "file", r.File, "provider", r.Namespace+"/"+r.Provider, "id", id, "identity", r.Identity, "expires", r.Now.Add(r.TTL).UTC().Format(time.RFC3339))
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		},
	}
	fl := create.Flags()
	fileFlags(fl, &r.APIKeyFile)
	fl.StringVar(&r.Identity, "identity", "", "who holds the key, e.g. batch-exporter (required)")
	fl.StringArrayVar(&r.Attributes, "attr", nil, "an attribute name=value of the key (repeatable; a name given twice is a list)")
	fl.StringVar(&r.ID, "id", "", "the key's public id, a DNS label (default: from the identity and random digits)")
	fl.DurationVar(&r.TTL, "ttl", cli.DefaultAPIKeyTTL, "how long the key is valid")

	var rr cli.APIKeyRequest
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Replace a key: a new key for its identity, the old one expiring after --overlap",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rr.Now = time.Now()
			key, id, err := cli.RotateAPIKey(rr)
			if err != nil {
				return err
			}
			g.log.Info("API key rotated", "file", rr.File, "provider", rr.Namespace+"/"+rr.Provider, "id", id, "old_id", rr.OldID, "old_expires", rr.Now.Add(rr.Overlap).UTC().Format(time.RFC3339))
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		},
	}
	fl = rotate.Flags()
	fileFlags(fl, &rr.APIKeyFile)
	fl.StringVar(&rr.OldID, "id", "", "the id of the key to replace (required)")
	fl.StringVar(&rr.ID, "new-id", "", "the new key's id (default: from the identity and random digits)")
	fl.DurationVar(&rr.TTL, "ttl", cli.DefaultAPIKeyTTL, "how long the new key is valid")
	fl.DurationVar(&rr.Overlap, "overlap", cli.DefaultAPIKeyOverlap, "how long the old key stays valid")
	_ = rotate.MarkFlagRequired("id")

	var vf cli.APIKeyFile
	var vid string
	revoke := &cobra.Command{
		Use:   "revoke",
		Short: "Mark a key revoked: refused (401, code revoked) once the control plane loads the file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := cli.RevokeAPIKey(vf, vid); err != nil {
				return err
			}
			g.log.Info("API key revoked", "file", vf.File, "provider", vf.Namespace+"/"+vf.Provider, "id", vid)
			return nil
		},
	}
	fl = revoke.Flags()
	fileFlags(fl, &vf)
	fl.StringVar(&vid, "id", "", "the id of the key to revoke (required)")
	_ = revoke.MarkFlagRequired("id")
	for _, c := range []*cobra.Command{create, rotate, revoke} {
		_ = c.MarkFlagRequired("file")
		_ = c.MarkFlagRequired("provider")
	}
	_ = create.MarkFlagRequired("identity")
	root.AddCommand(create, rotate, revoke)
	return root
}
