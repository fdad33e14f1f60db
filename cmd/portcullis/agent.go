package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/bootstrap"
)

const defaultAgentAdminAddr = "127.0.0.1:15021"

type agentFlags struct {
	controlPlane, tokenFile, socketDir, adminAddr string
	saTokenFile, trustDomain                      string
	pins                                          []string
	noPersist                                     bool
	memoryLimitMiB                                int64
	proxy                                         proxyFlags
}

// defaultAgentMemoryLimitMiB is the agent's soft Go memory limit: it runs beside every workload,
// holds one SVID (a few MiB live), and should return what TLS handshakes and rotations left
// behind instead of growing to twice its live heap.
const defaultAgentMemoryLimitMiB = 16

func newAgentCommand(g *globals) *cobra.Command {
	f := &agentFlags{}
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
			return runAgent(cmd.Context(), g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.controlPlane, "controlplane", defaultXDSAddr, "the control plane's gRPC TLS address")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the join token (from portcullis token create)")
	fl.StringVar(&f.saTokenFile, "k8s-token-file", "", "on Kubernetes: the pod's projected service-account token (audience portcullis), instead of a join token")
	fl.StringVar(&f.trustDomain, "trust-domain", "", "the mesh trust domain (with --k8s-token-file)")
	fl.StringArrayVar(&f.pins, "ca-pin", nil, "sha256:<hex> pin of a trust bundle root, verifying the control plane on first contact (with --k8s-token-file; repeatable)")
	fl.StringVar(&f.socketDir, "socket-dir", "", "directory for sds.sock, workload.sock and the agent's state (required)")
	fl.StringVar(&f.adminAddr, "admin-addr", defaultAgentAdminAddr, "admin HTTP address (health, readiness, metrics)")
	fl.BoolVar(&f.noPersist, "no-persist", false, "keep key and SVID in memory only (a restart then needs a new token)")
	fl.Int64Var(&f.memoryLimitMiB, "memory-limit-mib", defaultAgentMemoryLimitMiB, "soft Go memory limit in MiB (0: none; the GOMEMLIMIT environment variable wins)")
	f.proxy.register(fl)
	_ = cmd.MarkFlagRequired("socket-dir")
	return cmd
}

func runAgent(ctx context.Context, g *globals, f *agentFlags) error {
	log := g.log.With("component", "agent")
	if f.memoryLimitMiB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(f.memoryLimitMiB << 20)
	}
	metrics, err := telemetry.NewMetrics("portcullis-agent", g.version)
	if err != nil {
		return err
	}
	cfg := agent.Config{
		ControlPlane: f.controlPlane, TokenFile: f.tokenFile, SocketDir: f.socketDir, NoPersist: f.noPersist,
		ServiceAccountTokenFile: f.saTokenFile, Pins: f.pins,
		Logger: log, Meter: metrics.Meter("identity/agent"),
	}
	if f.trustDomain != "" {
		if cfg.TrustDomain, err = spiffeid.TrustDomainFromString(f.trustDomain); err != nil {
			return fmt.Errorf("--trust-domain: %w", err)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	admin := telemetry.NewAdmin(log, metrics)
	admin.AddReadiness("svid", a.Ready)
	ln, err := net.Listen("tcp", f.adminAddr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return a.Run(gctx) })
	group.Go(func() error { return admin.Serve(gctx, ln) })
	group.Go(func() error { return releaseAfterRotations(gctx, a) })
	if f.proxy.envoyPath != "" {
		var envoy atomic.Pointer[bootstrap.Supervisor]
		admin.AddReadiness("envoy", func() error {
			s := envoy.Load()
			if s == nil {
				return errors.New("envoy not started: waiting for the SVID")
			}
			return s.Ready(context.Background())
		})
		group.Go(func() error {
			s, err := f.proxy.startProxy(gctx, log, a, f.controlPlane, f.socketDir)
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return err
			}
			envoy.Store(s)
			go forwardSignals(gctx, s)
			if err := registerProxyMetrics(metrics, s); err != nil {
				return err
			}
			return s.Run(gctx)
		})
	}
	return waitWithGrace(ctx, log, group, metrics.Shutdown)
}

// registerProxyMetrics exports what Envoy alone counts — requests its local rate limit refused and
// the results of its ext_authz calls — read from its admin /stats at scrape time.
func registerProxyMetrics(m *telemetry.Metrics, s *bootstrap.Supervisor) error {
	meter := m.Meter("identity/agent/envoy")
	limited, err := meter.Int64ObservableCounter("portcullis_proxy_rate_limited",
		metric.WithDescription("Requests the proxy's local rate limit answered with 429 (Envoy's ratelimit.http_local_rate_limit.rate_limited)."))
	if err != nil {
		return err
	}
	authz, err := meter.Int64ObservableCounter("portcullis_proxy_authz_checks",
		metric.WithDescription("The proxy's ext_authz calls by result: ok, denied, error, failure_mode_allowed (Envoy's http.inbound.ext_authz.portcullis.*)."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		counters, err := s.Counters(ctx, "rate_limited|ext_authz")
		if err != nil {
			return nil // Envoy restarting: no sample rather than a failed scrape
		}
		o.ObserveInt64(limited, int64(counters["ratelimit.http_local_rate_limit.rate_limited"]))
		for _, r := range []string{"ok", "denied", "error", "failure_mode_allowed"} {
			o.ObserveInt64(authz, int64(counters["http.inbound.ext_authz.portcullis."+r]), metric.WithAttributes(attribute.String("result", r)))
		}
		return nil
	}, limited, authz)
	return err
}

// forwardSignals passes SIGUSR1 (reopen logs) on to Envoy.
func forwardSignals(ctx context.Context, s *bootstrap.Supervisor) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return
		case v := <-sig:
			_ = s.Signal(v) // Envoy may be restarting; the next signal will reach it
		}
	}
}

// releaseAfterRotations returns memory to the OS once a rotation's TLS handshakes and pushes
// are done: the agent idles between rotations, and its footprint is multiplied by every
// workload on the host.
func releaseAfterRotations(ctx context.Context, a *agent.Agent) error {
	for {
		_, changed := a.Current()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
			debug.FreeOSMemory()
		}
	}
}
