//go:build !agentonly

package main

import (
	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/authzservice"
	"github.com/portcullis/portcullis/xds/model"
)

func newAuthzCommand(g *globals) *cobra.Command {
	cfg := authzservice.Config{}
	cmd := &cobra.Command{
		Use:   "authz",
		Short: "Run the ext_authz authorization service on its own",
		Long: `Run the authorization service (Envoy ext_authz, gRPC) apart from the control plane, to scale
authorization on its own. It loads the mesh documents in --config (policies, JWT providers;
re-read on change, the last good set stays live) and serves
envoy.service.auth.v3.Authorization/Check on --listen with mutual TLS: its own X.509-SVID and
the trust bundle come from the SPIFFE Workload API (--workload-api-socket), and only workloads
of its trust domain may call it. On the same port it serves the global rate limit service
(envoy.service.ratelimit.v3) for Global limits, with their buckets in --ratelimit-redis.

Decisions are written as JSON lines to --decision-log ("-" is stdout). The admin port serves:

  /healthz       the process is up
  /readyz        a valid mesh is loaded and compiled
  /metrics       Prometheus metrics
  /debug/authz   live policies, JWT providers' health, token cache`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Version, cfg.Logger, cfg.Stdout = g.version, g.log, cmd.OutOrStdout()
			s, err := authzservice.New(cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.ConfigDir, "config", "", "directory of mesh documents (required)")
	fl.StringVar(&cfg.Listen, "listen", authzservice.DefaultListen, "ext_authz gRPC address (mTLS)")
	fl.StringVar(&cfg.AdminAddr, "admin-addr", authzservice.DefaultAdminAddr, "admin HTTP address (health, readiness, metrics, debug)")
	fl.StringVar(&cfg.WorkloadAPISocket, "workload-api-socket", "", "path of the SPIFFE Workload API unix socket (default: $SPIFFE_ENDPOINT_SOCKET)")
	fl.StringVar(&cfg.DecisionLog, "decision-log", "-", `decision log file (JSON lines, appended, mode 0600); "-" is stdout`)
	fl.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector (host:port) for the service's spans; none when empty")
	cfg.OTLP.Register(fl)
	cfg.RateLimit.Register(fl)
	fl.Float64Var(&cfg.SamplingPercent, "trace-sampling", model.DefaultTracingSampling, "percent of traces sampled when the caller (Envoy) has not decided (requests follow Envoy's decision, Mesh.spec.tracing.samplingPercent)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
