package main

import (
	"fmt"
	"log/slog"
	"runtime"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"

	"github.com/portcullis/portcullis/telemetry"
)

// globals are the flags every subcommand shares and what is built from them.
type globals struct {
	version   string
	logLevel  string
	logFormat string
	log       *slog.Logger
}

func newRootCommand(version string) *cobra.Command {
	g := &globals{version: version}
	root := &cobra.Command{
		Use:   "portcullis",
		Short: "Portcullis: a service mesh control plane for Envoy",
		Long: `Portcullis turns a few YAML documents into Envoy configuration, gives every workload a
short-lived SPIFFE identity, and authorizes every request with JWT and ABAC/PBAC policies.

Start with "portcullis demo" for a whole local mesh, or see README.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			log, err := telemetry.NewLogger(cmd.ErrOrStderr(), g.logLevel, g.logFormat)
			if err != nil {
				return err
			}
			g.log = log
			// The OpenTelemetry SDK reports export failures through its process-wide error
			// handler; route them into our log (at debug: dropped spans are counted in
			// portcullis_trace_spans_dropped_total) instead of the standard logger.
			otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
				log.Debug("opentelemetry", "err", err)
			}))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(newVersionCommand(g))
	root.AddCommand(commands(g)...)
	return root
}

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "portcullis %s (%s, %s/%s)\n", g.version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// flagError names the flag whose value is wrong.
func flagError(name string, err error) error { return fmt.Errorf("--%s: %w", name, err) }
