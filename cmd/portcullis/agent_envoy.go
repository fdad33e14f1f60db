package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/model"
)

// proxyFlags configure the Envoy an agent runs, and the workload it registers.
type proxyFlags struct {
	envoyPath        string
	envoyAdminAddr   string
	envoyConcurrency int
	envoyLog         string
	delta            bool
	workload         string
	service          string
	serviceAccount   string
	address          string
	mode             string
	inboundPort      uint32
	outboundPort     uint32
	appPort          uint32
	servicePort      uint32
	upstreams        []string
}

func (f *proxyFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.envoyPath, "envoy-path", "", "run and supervise this Envoy with a bootstrap for the mesh (empty: no proxy, identity only)")
	fl.StringVar(&f.envoyAdminAddr, "envoy-admin-addr", "127.0.0.1:0", "Envoy's admin address (port 0: chosen by the OS)")
	fl.IntVar(&f.envoyConcurrency, "envoy-concurrency", 2, "Envoy worker threads")
	fl.StringVar(&f.envoyLog, "envoy-log", "", "file for Envoy's log (default: the agent's stderr)")
	fl.BoolVar(&f.delta, "xds-delta", false, "use incremental (delta) xDS instead of state of the world")
	fl.StringVar(&f.workload, "workload", "", "workload name; the proxy's node id is <workload>.<namespace of the SVID> (required with --envoy-path)")
	fl.StringVar(&f.service, "service", "", "register the workload with these flags instead of a Workload document: its Service")
	fl.StringVar(&f.serviceAccount, "service-account", "", "the workload's service account (default: the SVID's)")
	fl.StringVar(&f.address, "address", "127.0.0.1", "IP where the proxy accepts mesh traffic")
	fl.StringVar(&f.mode, "mode", string(model.ModeLocal), "Local (upstreams on local ports) or Transparent (iptables redirects the workload's traffic: inbound to --inbound-port, default 15006, outbound to --outbound-port, default 15001; every mesh service reachable)")
	fl.Uint32Var(&f.inboundPort, "inbound-port", 0, "the proxy's inbound (mesh) port")
	fl.Uint32Var(&f.outboundPort, "outbound-port", 0, "Transparent mode: where redirected outbound connections arrive (default 15001)")
	fl.Uint32Var(&f.appPort, "app-port", 0, "the application's port on 127.0.0.1")
	fl.Uint32Var(&f.servicePort, "service-port", 0, "the service port this workload serves, when the application listens on another (several instances on one machine); default --app-port")
	fl.StringArrayVar(&f.upstreams, "upstream", nil, "an upstream as service[.namespace][:port]=[127.0.0.1:]localPort; repeatable")
}

// registration builds the Workload the flags describe, or nil when --service is not set (a
// Workload document named by the node id describes the proxy then).
func (f *proxyFlags) registration(namespace, serviceAccount string) (*model.WorkloadDoc, error) {
	if f.service == "" && model.WorkloadMode(f.mode) != model.ModeTransparent {
		return nil, nil
	}
	sa := f.serviceAccount
	if sa == "" {
		sa = serviceAccount
	}
	w := &model.WorkloadDoc{
		TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindWorkload},
		Metadata: model.ObjectMeta{Name: f.workload, Namespace: namespace},
		Spec: model.WorkloadSpec{
			Mode:    model.WorkloadMode(f.mode),
			Service: f.service, ServiceAccount: sa, Address: f.address,
			InboundPort: f.inboundPort, OutboundPort: f.outboundPort, AppPort: f.appPort, ServicePort: f.servicePort,
		},
	}
	for _, u := range f.upstreams {
		up, err := parseUpstream(u)
		if err != nil {
			return nil, err
		}
		w.Spec.Upstreams = append(w.Spec.Upstreams, up)
	}
	if errs := w.Validate(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = fmt.Sprintf("%s: %s", e.Field, e.Message)
		}
		return nil, fmt.Errorf("workload flags: %s", strings.Join(msgs, "; "))
	}
	return w, nil
}

// parseUpstream reads "backend=127.0.0.1:9001", "backend.shop:8080=9001" and the like.
func parseUpstream(s string) (model.Upstream, error) {
	target, local, ok := strings.Cut(s, "=")
	if !ok {
		return model.Upstream{}, fmt.Errorf("--upstream %q: want service[.namespace][:port]=[127.0.0.1:]localPort", s)
	}
	var u model.Upstream
	svc, port, hasPort := strings.Cut(target, ":")
	u.Service = svc
	if hasPort {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return u, fmt.Errorf("--upstream %q: port %q", s, port)
		}
		u.Port = uint32(p)
	}
	if host, p, err := net.SplitHostPort(local); err == nil {
		if host != "127.0.0.1" {
			return u, fmt.Errorf("--upstream %q: local listeners are on 127.0.0.1", s)
		}
		local = p
	}
	lp, err := strconv.ParseUint(local, 10, 16)
	if err != nil {
		return u, fmt.Errorf("--upstream %q: local port %q", s, local)
	}
	u.LocalPort = uint32(lp)
	return u, nil
}

// startProxy writes the bootstrap for the agent's identity and returns the supervisor that runs
// Envoy with it, or nil when no Envoy is configured. It waits for the first SVID: the node id and
// the certificate names come from it.
func (f *proxyFlags) startProxy(ctx context.Context, log *slog.Logger, a *agent.Agent, controlPlane, socketDir string) (*bootstrap.Supervisor, error) {
	if f.envoyPath == "" {
		return nil, nil
	}
	if f.workload == "" {
		return nil, errors.New("--workload is required with --envoy-path")
	}
	var id *agent.Identity
	for id == nil {
		var changed <-chan struct{}
		id, changed = a.Current()
		if id != nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
	ns, sa, err := model.ParseWorkloadID(id.ID())
	if err != nil {
		return nil, err
	}
	reg, err := f.registration(ns, sa)
	if err != nil {
		return nil, err
	}
	cluster := f.service
	if cluster == "" && reg != nil && reg.Spec.Service != "" {
		cluster = reg.Spec.Service
	}
	if cluster == "" {
		cluster = sa
	}
	b, err := bootstrap.Build(bootstrap.Options{
		NodeID: f.workload + "." + ns, Cluster: cluster, Identity: id.ID(),
		ControlPlaneAddress: controlPlane, ControlPlaneID: ca.ControlPlaneID(id.ID().TrustDomain()),
		SDSSocket: filepath.Join(socketDir, agent.SDSSocket), AdminAddress: f.envoyAdminAddr,
		Delta: f.delta, Workload: reg,
	})
	if err != nil {
		return nil, err
	}
	raw, err := bootstrap.JSON(b)
	if err != nil {
		return nil, err
	}
	var out io.Writer = os.Stderr
	if f.envoyLog != "" {
		file, err := os.OpenFile(f.envoyLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("envoy log: %w", err)
		}
		out = file
	}
	dir := filepath.Join(socketDir, "envoy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	log.Info("starting envoy", "node", f.workload+"."+ns, "identity", id.ID().String(), "delta", f.delta, "registered_by_flags", reg != nil)
	return &bootstrap.Supervisor{
		EnvoyPath: f.envoyPath, Bootstrap: raw, Dir: dir, Output: out, Logger: log.With("component", "envoy"),
		Args: append([]string{"--concurrency", strconv.Itoa(f.envoyConcurrency), "--log-level", "warn"}, envoyDrainArgs...),
	}, nil
}

// envoyDrainArgs make a changed listener apply from each peer's next request. Envoy serves the
// connections an old listener accepted with the old filters until they close, and its default
// gradual drain closes them at random over 10 minutes: a rate limit or an authorization failure
// mode changed mid-traffic reached some connections in milliseconds and others minutes later
// (the fault suite caught a fail-open change not applied on one instance's connections).
// Draining immediately closes each old connection after its next response (HTTP/1.1
// Connection: close, HTTP/2 GOAWAY) — the peer reconnects, one TLS handshake — and closes idle
// ones after 15 s.
var envoyDrainArgs = []string{"--drain-strategy", "immediate", "--drain-time-s", "15"}
