//go:build !agentonly

package main

import (
	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/cli"
	"github.com/portcullis/portcullis/cmd/internal/controlplane"
)

func newProxyCommand(_ *globals) *cobra.Command {
	var adminAddr string
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Inspect the proxies connected to the control plane",
	}
	cmd.PersistentFlags().StringVar(&adminAddr, "admin-addr", controlplane.DefaultAdminAddr, "control plane admin address")
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "What each proxy has ACKed or NACKed",
		Long: `Show every registered proxy: whether it is connected, whether it has ACKed everything
published for it, and for each resource type the version it has; a NACK shows the version Envoy
refused and its reason (the proxy keeps its previous configuration until a fixed one is published).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cli.ProxyStatus(cmd.OutOrStdout(), adminAddr) },
	}, &cobra.Command{
		Use:   "config NODE",
		Short: "Print a proxy's current resources as YAML",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cli.ProxyConfig(cmd.OutOrStdout(), adminAddr, args[0])
		},
	})
	return cmd
}
