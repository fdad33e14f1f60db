//go:build !agentonly

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/examples/demoapp"
)

// newDemoAppCommand runs one of the demo applications on its own, as the Kubernetes demo
// (deploy/overlays/demo) does in its pods.
func newDemoAppCommand(g *globals) *cobra.Command {
	var listen, upstream, name string
	cmd := &cobra.Command{
		Use:   "demo-app backend|frontend",
		Short: "Run a demo application (the backend, or the frontend that calls it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "backend":
				g.log.Info("demo backend listening", "addr", listen)
				return demoapp.Serve(cmd.Context(), listen, demoapp.Backend(name))
			case "frontend":
				g.log.Info("demo frontend listening", "addr", listen, "upstream", upstream)
				return demoapp.Serve(cmd.Context(), listen, demoapp.Frontend(upstream))
			}
			return fmt.Errorf("demo-app: %q is neither backend nor frontend", args[0])
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "0.0.0.0:8080", "listen address")
	cmd.Flags().StringVar(&upstream, "upstream", "http://backend:8080", "the frontend's backend URL")
	cmd.Flags().StringVar(&name, "name", "backend", "the backend's name in its answers")
	return cmd
}
