//go:build !agentonly

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/controlplane"
	"github.com/portcullis/portcullis/cmd/internal/demo"
	"github.com/portcullis/portcullis/xds/bootstrap"
)

func newDemoCommand(g *globals) *cobra.Command {
	cfg := demo.Config{}
	var writeMesh string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole local mesh on loopback until Ctrl-C",
		Long: `Run the demo mesh on loopback: the control plane with the documents of examples/demo/mesh
(copied to a work directory you can edit), a frontend and a backend application, each with an
agent and a real Envoy. It prints what to try — mTLS identities, allow, deny, a JWT-gated path,
rate limiting — keeps running until Ctrl-C (SIGINT or SIGTERM; run from make, a signal to make
alone stops it too), then stops everything and removes its files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if writeMesh != "" {
				if err := demo.WriteMesh(writeMesh); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote the demo's documents and its issuer's key set to %s\n", writeMesh)
				return nil
			}
			cfg.Version, cfg.Out = g.version, cmd.OutOrStdout()
			return demo.Run(cmd.Context(), cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&writeMesh, "write-mesh", "", "only write the demo's documents, with a key set for its JWTProvider, into this directory and exit (for a mesh run by hand)")
	fl.StringVar(&cfg.EnvoyPath, "envoy-path", "envoy", "Envoy binary for the demo's proxies")
	fl.StringVar(&cfg.JaegerPath, "jaeger-path", "", "Jaeger v2 binary (make jaeger): traces are collected on 127.0.0.1:4317 and browsed in Jaeger's UI on 127.0.0.1:16686 and on the admin port's /traces")
	fl.StringVar(&cfg.JaegerUI, "jaeger-ui", "", "directory of the Jaeger UI's build (make jaeger builds it into .cache/jaeger-ui-<version>); without it Jaeger serves a placeholder page")
	fl.StringVar(&cfg.RedisPath, "redis-path", "", "redis-server binary (make redis): the Global limit's buckets, on 127.0.0.1:16379; without it that limit is not enforced (its failure mode, open)")
	fl.StringVar(&cfg.WorkDir, "work-dir", "", "keep the demo's files (mesh documents, logs, data) here instead of a temporary directory")
	fl.StringVar(&cfg.AdminAddr, "admin-addr", controlplane.DefaultAdminAddr, "control plane admin address")
	fl.StringVar(&cfg.XDSAddr, "xds-addr", bootstrap.DefaultControlPlaneAddr, "control plane xDS and certificate address")
	fl.StringVar(&cfg.AuthzAddr, "authz-addr", controlplane.DefaultAuthzAddr, "control plane ext_authz address")
	return cmd
}
