package sidecar

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/telemetry/watch"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/model"
)

// startProxy waits for the first SVID (the node id and the certificate names come from it),
// writes Envoy's bootstrap and returns the supervisor that runs Envoy with it.
func (s *Sidecar) startProxy(ctx context.Context) (*bootstrap.Supervisor, error) {
	p := s.cfg.Proxy
	id, err := watch.Wait(ctx, s.agent, func(id *agent.Identity) bool { return id != nil })
	if err != nil {
		return nil, err
	}
	ns, sa, err := model.ParseWorkloadID(id.ID())
	if err != nil {
		return nil, err
	}
	reg, err := p.registration(ns, sa)
	if err != nil {
		return nil, err
	}
	cluster := p.Service
	if cluster == "" {
		cluster = sa
	}
	node := p.Workload + "." + ns
	b, err := bootstrap.Build(bootstrap.Options{
		NodeID: node, Cluster: cluster, Identity: id.ID(),
		ControlPlaneAddress: s.cfg.ControlPlane, ControlPlaneID: ca.ControlPlaneID(id.ID().TrustDomain()),
		SDSSocket: filepath.Join(s.cfg.SocketDir, agent.SDSSocket), AdminAddress: p.EnvoyAdminAddr,
		Delta: p.Delta, Workload: reg,
	})
	if err != nil {
		return nil, err
	}
	raw, err := bootstrap.JSON(b)
	if err != nil {
		return nil, err
	}
	var out io.Writer = os.Stderr
	if p.EnvoyLog != "" {
		file, err := os.OpenFile(p.EnvoyLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sidecar: envoy log: %w", err)
		}
		out = file
	}
	dir := filepath.Join(s.cfg.SocketDir, "envoy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	s.log.Info("starting envoy", "node", node, "identity", id.ID().String(), "delta", p.Delta, "registered_by_flags", reg != nil)
	return &bootstrap.Supervisor{
		EnvoyPath: p.EnvoyPath, Bootstrap: raw, Dir: dir, Output: out, Logger: s.log.With("component", "envoy"),
		Args: []string{"--concurrency", strconv.Itoa(p.EnvoyConcurrency), "--log-level", "warn"},
	}, nil
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
