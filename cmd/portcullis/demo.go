package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/examples"
)

type demoFlags struct {
	envoyPath string
	workDir   string
	adminAddr string
	xdsAddr   string
}

func newDemoCommand(g *globals) *cobra.Command {
	f := &demoFlags{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole local mesh on loopback until Ctrl-C",
		Long: `Run the demo mesh: the control plane with the documents of examples/demo/mesh, and (as they
are built) two example services with agents and real Envoys. It prints what to try, keeps running
until Ctrl-C, then stops everything and removes its temporary files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			work := f.workDir
			if work == "" {
				dir, err := os.MkdirTemp("", "portcullis-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				work = dir
			}
			configDir := filepath.Join(work, "mesh")
			if err := writeDemoMesh(configDir); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, `Portcullis demo
  mesh documents   %s   (edit them: the control plane reloads within a second)
  admin            http://%[2]s/readyz  http://%[2]s/debug/mesh  http://%[2]s/metrics

  workload identity: the CA runs in %[3]s; try
    portcullis token create --data-dir %[3]s --namespace demo --service frontend > token
    portcullis agent --controlplane %[4]s --token-file token --socket-dir ./sockets --admin-addr 127.0.0.1:0

  not built yet: xDS to Envoy, authorization, traces (issues 5-7).

Ctrl-C stops the demo.
`, configDir, f.adminAddr, filepath.Join(work, "data"), f.xdsAddr)
			return runControlPlane(cmd.Context(), g, &controlPlaneFlags{
				configDir: configDir,
				dataDir:   filepath.Join(work, "data"),
				adminAddr: f.adminAddr,
				xdsAddr:   f.xdsAddr,
				authzAddr: defaultAuthzAddr,
			}, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&f.envoyPath, "envoy-path", "envoy", "Envoy binary for the demo's proxies")
	cmd.Flags().StringVar(&f.workDir, "work-dir", "", "keep the demo's files here instead of a temporary directory")
	cmd.Flags().StringVar(&f.adminAddr, "admin-addr", defaultAdminAddr, "control plane admin address")
	cmd.Flags().StringVar(&f.xdsAddr, "xds-addr", defaultXDSAddr, "control plane gRPC TLS address (certificate service)")
	return cmd
}

// writeDemoMesh copies the embedded demo documents into dir.
func writeDemoMesh(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fs.WalkDir(examples.DemoMesh, "demo/mesh", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := examples.DemoMesh.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o600)
	})
}
