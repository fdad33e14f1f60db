package main

import (
	"io/fs"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/cmd/internal/sidecar"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/inject/appprobe"
	"github.com/portcullis/portcullis/xds/model"
)

func newAgentCommand(g *globals) *cobra.Command {
	cfg := sidecar.Config{}
	var trustDomain, mode, socketMode string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the identity agent beside one workload: SVID, SDS and the Workload API",
		Long: `Run the agent for one workload. It makes its key in memory, gets an X.509-SVID from the
control plane with the join token in --token-file (first contact; the token's pins verify the
control plane), renews it over mTLS at half of its life, and serves, in --socket-dir (0750):

  sds.sock        Envoy's SecretDiscoveryService: secrets "<SPIFFE ID>" and "default" (the SVID)
                  and "spiffe://<trust domain>" (validation context with Envoy's SPIFFE validator)
  workload.sock   the SPIFFE Workload API (X.509), for go-spiffe's workloadapi and others

Key and SVID are kept in --socket-dir/state (0700, files 0600) so a restart renews over mTLS
instead of needing a new token (--no-persist turns that off).

With --envoy-path it also writes Envoy's bootstrap (ADS to the control plane over mTLS with the
SVID from sds.sock, admin on loopback, the node id <workload>.<namespace>) and supervises Envoy:
restarts it with backoff, stops it cleanly, forwards SIGUSR1 (log reopen). The workload is the
Workload document named by the node id, or — with --service — the one these flags describe:

  portcullis agent --token-file token --socket-dir ./frontend --envoy-path $(which envoy) \
    --workload frontend-1 --service frontend --inbound-port 15101 --app-port 18080 \
    --upstream backend=127.0.0.1:19001

The admin address serves /healthz, /readyz (200 once the agent has an SVID and, with a proxy,
once Envoy has its certificates and first configuration) and /metrics.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Version, cfg.Logger = g.version, g.log
			cfg.Proxy.Mode = model.WorkloadMode(mode)
			m, err := strconv.ParseUint(socketMode, 8, 32)
			if err != nil {
				return flagError("socket-mode", err)
			}
			cfg.SocketMode = fs.FileMode(m)
			if trustDomain != "" {
				td, err := spiffeid.TrustDomainFromString(trustDomain)
				if err != nil {
					return flagError("trust-domain", err)
				}
				cfg.TrustDomain = td
			}
			s, err := sidecar.New(cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.ControlPlane, "controlplane", bootstrap.DefaultControlPlaneAddr, "the control plane's gRPC TLS address")
	fl.StringVar(&cfg.TokenFile, "token-file", "", "file holding the join token (from portcullis token create)")
	fl.StringVar(&cfg.ServiceAccountTokenFile, "k8s-token-file", "", "on Kubernetes: the pod's projected service-account token (audience portcullis), instead of a join token")
	fl.StringVar(&trustDomain, "trust-domain", "", "the mesh trust domain (with --k8s-token-file)")
	fl.StringArrayVar(&cfg.Pins, "ca-pin", nil, "sha256:<hex> pin of a trust bundle root, verifying the control plane on first contact (with --k8s-token-file; repeatable)")
	fl.StringVar(&cfg.SocketDir, "socket-dir", "", "directory for sds.sock, workload.sock and the agent's state (required)")
	fl.StringVar(&socketMode, "socket-mode", "0660", "mode of sds.sock and workload.sock, octal (0666 in a pod, where applications run as other users)")
	fl.StringVar(&cfg.AdminAddr, "admin-addr", sidecar.DefaultAdminAddr, "admin HTTP address (health, readiness, metrics)")
	fl.BoolVar(&cfg.NoPersist, "no-persist", false, "keep key and SVID in memory only (a restart then needs a new token)")
	fl.StringVar(&cfg.AppProbes, "app-probes", os.Getenv(appprobe.Env), "the application probes the injector rewrote to the admin port, JSON (default $"+appprobe.Env+")")
	fl.Int64Var(&cfg.MemoryLimitMiB, "memory-limit-mib", sidecar.DefaultMemoryLimitMiB, "soft Go memory limit in MiB (0: none; the GOMEMLIMIT environment variable wins)")

	p := &cfg.Proxy
	fl.StringVar(&p.EnvoyPath, "envoy-path", "", "run and supervise this Envoy with a bootstrap for the mesh (empty: no proxy, identity only)")
	fl.StringVar(&p.EnvoyAdminAddr, "envoy-admin-addr", "127.0.0.1:0", "Envoy's admin address (port 0: chosen by the OS)")
	fl.IntVar(&p.EnvoyConcurrency, "envoy-concurrency", 2, "Envoy worker threads")
	fl.StringVar(&p.EnvoyLog, "envoy-log", "", "file for Envoy's log (default: the agent's stderr)")
	fl.BoolVar(&p.Delta, "xds-delta", false, "use incremental (delta) xDS instead of state of the world")
	fl.StringVar(&p.Workload, "workload", "", "workload name; the proxy's node id is <workload>.<namespace of the SVID> (required with --envoy-path)")
	fl.StringVar(&p.Service, "service", "", "register the workload with these flags instead of a Workload document: its Service")
	fl.StringVar(&p.ServiceAccount, "service-account", "", "the workload's service account (default: the SVID's)")
	fl.StringVar(&p.Address, "address", "127.0.0.1", "IP where the proxy accepts mesh traffic")
	fl.StringVar(&mode, "mode", string(model.ModeLocal), "Local (upstreams on local ports) or Transparent (iptables redirects the workload's traffic: inbound to --inbound-port, default 15006, outbound to --outbound-port, default 15001; every mesh service reachable)")
	fl.Uint32Var(&p.InboundPort, "inbound-port", 0, "the proxy's inbound (mesh) port")
	fl.Uint32Var(&p.OutboundPort, "outbound-port", 0, "Transparent mode: where redirected outbound connections arrive (default 15001)")
	fl.Uint32Var(&p.AppPort, "app-port", 0, "the application's port on 127.0.0.1")
	fl.Uint32Var(&p.ServicePort, "service-port", 0, "the service port this workload serves, when the application listens on another (several instances on one machine); default --app-port")
	fl.StringArrayVar(&p.Upstreams, "upstream", nil, "an upstream as service[.namespace][:port]=[127.0.0.1:]localPort; repeatable")
	_ = cmd.MarkFlagRequired("socket-dir")
	return cmd
}
