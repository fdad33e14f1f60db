//go:build !agentonly

package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/portcullis/portcullis/deploy"
)

func newInstallCommand(_ *globals) *cobra.Command {
	var overlay, kubeconfig string
	var dryRun, serverDryRun bool
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
			dir := "base"
			if overlay != "" {
				dir = "overlays/" + overlay
			}
			out, err := deploy.Render(deploy.Manifests, dir)
			if err != nil {
				return err
			}
			if dryRun {
				_, err := cmd.OutOrStdout().Write(out)
				return err
			}
			objs, err := deploy.Objects(out)
			if err != nil {
				return err
			}
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			rules.ExplicitPath = kubeconfig
			cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				return fmt.Errorf("install: %w", err)
			}
			return deploy.Apply(cmd.Context(), cfg, objs, serverDryRun, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&overlay, "overlay", "", "an overlay of deploy/overlays to install instead of the base (demo)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the manifests instead of applying them")
	cmd.Flags().BoolVar(&serverDryRun, "server-dry-run", false, "apply with dryRun=All: the API server validates and admits, nothing is stored")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	return cmd
}
