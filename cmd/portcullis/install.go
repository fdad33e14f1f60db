//go:build !agentonly

package main

import (
	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/deploy"
)

func newInstallCommand(_ *globals) *cobra.Command {
	var opts deploy.InstallOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the control plane on Kubernetes (or print its manifests with --dry-run)",
		Long: `Install the manifests of deploy/ (embedded in this binary): the namespace, CRDs, RBAC, the
control plane Deployment (2 replicas) with its PodDisruptionBudget and Services, the injection
webhook and Jaeger; with --overlay demo also a meshed demo application.

  portcullis install --dry-run | kubectl apply --server-side -f -   # the same as kubectl apply -k deploy/base
  portcullis install                                                # server-side apply with your kubeconfig
  portcullis install --server-dry-run                               # let the API server check everything`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return deploy.Install(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&opts.Overlay, "overlay", "", "an overlay of deploy/overlays to install instead of the base (demo)")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "print the manifests instead of applying them")
	cmd.Flags().BoolVar(&opts.ServerDryRun, "server-dry-run", false, "apply with dryRun=All: the API server validates and admits, nothing is stored")
	cmd.Flags().StringVar(&opts.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	return cmd
}
