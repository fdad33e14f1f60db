package sidecar

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
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
// writes Envoy's bootstrap and returns the supervisor that runs Envoy with it, and the proxy's
// service as namespace/name (its service account's name for a workload that serves none).
func (s *Sidecar) startProxy(ctx context.Context) (*bootstrap.Supervisor, string, error) {
	p := s.cfg.Proxy
	id, err := watch.Wait(ctx, s.agent, func(id *agent.Identity) bool { return id != nil })
	if err != nil {
		return nil, "", err
	}
	ns, sa, err := model.ParseWorkloadID(id.ID())
	if err != nil {
		return nil, "", err
	}
	reg, err := p.registration(ns, sa)
	if err != nil {
		return nil, "", err
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
		return nil, "", err
	}
	raw, err := bootstrap.JSON(b)
	if err != nil {
		return nil, "", err
	}
	var out io.Writer = os.Stderr
	if p.EnvoyLog != "" {
		file, err := os.OpenFile(p.EnvoyLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, "", fmt.Errorf("sidecar: envoy log: %w", err)
		}
		out = file
	}
	dir := filepath.Join(s.cfg.SocketDir, "envoy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("sidecar: %w", err)
	}
	s.log.Info("starting envoy", "node", node, "identity", id.ID().String(), "delta", p.Delta, "registered_by_flags", reg != nil)
	return &bootstrap.Supervisor{
		EnvoyPath: p.EnvoyPath, Bootstrap: raw, Dir: dir, Output: out, Logger: s.log.With("component", "envoy"),
		Args: []string{"--concurrency", strconv.Itoa(p.EnvoyConcurrency), "--log-level", "warn"},
	}, ns + "/" + cluster, nil
}

// registerProxyMetrics exports what Envoy alone counts — requests its rate limits refused, the
// results of its ext_authz calls and of its calls to the global rate limit service — read from
// its admin /stats at scrape time, each labelled with the proxy's service (namespace/name), so
// alerts can say which service is affected.
func registerProxyMetrics(m *telemetry.Metrics, s *bootstrap.Supervisor, service string) error {
	meter := m.Meter("identity/agent/envoy")
	limited, err := meter.Int64ObservableCounter("portcullis_proxy_rate_limited",
		metric.WithDescription("Requests the proxy's rate limits answered with 429, by scope: local (the local rate limit filters, before and after authorization) or global (the global rate limit service said over limit)."))
	if err != nil {
		return err
	}
	authz, err := meter.Int64ObservableCounter("portcullis_proxy_authz_checks",
		metric.WithDescription("The proxy's ext_authz calls by result: ok, denied, error, failure_mode_allowed (Envoy's http.inbound.ext_authz.portcullis.*)."))
	if err != nil {
		return err
	}
	rlErrors, err := meter.Int64ObservableCounter("portcullis_proxy_ratelimit_errors",
		metric.WithDescription("Calls to the global rate limit service that failed (it or its Redis unreachable), by the limit's failure mode: closed (answered 503) or open (let through)."))
	if err != nil {
		return err
	}
	svc := attribute.String("service", service)
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		counters, err := s.Counters(ctx, "rate_limited|ext_authz|ratelimit.global_")
		if err != nil {
			return nil // Envoy restarting: no sample rather than a failed scrape
		}
		c := proxyCounters(counters)
		o.ObserveInt64(limited, int64(c.localLimited), metric.WithAttributes(svc, attribute.String("scope", "local")))
		o.ObserveInt64(limited, int64(c.globalLimited), metric.WithAttributes(svc, attribute.String("scope", "global")))
		o.ObserveInt64(rlErrors, int64(c.globalErrors[model.FailClosed]), metric.WithAttributes(svc, attribute.String("failure_mode", "closed")))
		o.ObserveInt64(rlErrors, int64(c.globalErrors[model.FailOpen]), metric.WithAttributes(svc, attribute.String("failure_mode", "open")))
		for _, r := range []string{"ok", "denied", "error", "failure_mode_allowed"} {
			o.ObserveInt64(authz, int64(counters["http.inbound.ext_authz.portcullis."+r]), metric.WithAttributes(svc, attribute.String("result", r)))
		}
		return nil
	}, limited, authz, rlErrors)
	return err
}

// rateLimitCounters are the rate limit counters of one Envoy, summed over its filters.
type rateLimitCounters struct {
	localLimited, globalLimited uint64
	globalErrors                map[model.FailureMode]uint64
}

// proxyCounters sums Envoy's rate limit counters: the local filters' rate_limited
// (<stat prefix>.http_local_rate_limit.rate_limited) and the global filters' over_limit and
// error, which Envoy keeps per route target cluster
// (cluster.<cluster>.ratelimit.global_<closed|open>.<counter>).
func proxyCounters(counters map[string]uint64) rateLimitCounters {
	c := rateLimitCounters{globalErrors: map[model.FailureMode]uint64{}}
	for name, v := range counters {
		switch {
		case strings.HasSuffix(name, ".http_local_rate_limit.rate_limited"):
			c.localLimited += v
		case strings.HasSuffix(name, ".ratelimit.global_closed.over_limit"), strings.HasSuffix(name, ".ratelimit.global_open.over_limit"):
			c.globalLimited += v
		case strings.HasSuffix(name, ".ratelimit.global_closed.error"):
			c.globalErrors[model.FailClosed] += v
		case strings.HasSuffix(name, ".ratelimit.global_open.error"):
			c.globalErrors[model.FailOpen] += v
		}
	}
	return c
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
