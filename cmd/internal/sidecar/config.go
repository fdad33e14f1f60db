package sidecar

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/xds/model"
)

// Defaults of the agent's flags.
const (
	DefaultAdminAddr = "127.0.0.1:15021"
	// DefaultMemoryLimitMiB is the agent's soft Go memory limit: it runs beside every workload,
	// holds one SVID (a few MiB live), and should return what TLS handshakes and rotations left
	// behind instead of growing to twice its live heap.
	DefaultMemoryLimitMiB = 16
)

// Config is what the agent is started with; cmd/portcullis fills it from flags.
type Config struct {
	Version string
	Logger  *slog.Logger

	ControlPlane string // the certificate service and ADS, host:port
	TokenFile    string // a join token (local mode)
	// ServiceAccountTokenFile, TrustDomain and Pins join with the pod's projected
	// service-account token instead (Kubernetes).
	ServiceAccountTokenFile string
	TrustDomain             spiffeid.TrustDomain
	Pins                    []string
	SocketDir               string
	SocketMode              fs.FileMode // 0 is the agent's default (0660)
	AdminAddr               string
	NoPersist               bool
	MemoryLimitMiB          int64 // 0: none; GOMEMLIMIT wins
	// AppProbes are the application probes the injector rewrote to the admin port (JSON of
	// appprobe.Probes); the agent runs them on the kubelet's behalf.
	AppProbes string
	Proxy     ProxyConfig
}

// ProxyConfig configures the Envoy the agent runs (none when EnvoyPath is empty) and the
// workload it registers.
type ProxyConfig struct {
	EnvoyPath        string
	EnvoyAdminAddr   string
	EnvoyConcurrency int
	EnvoyLog         string // "" is the agent's stderr
	Delta            bool   // incremental xDS
	// Workload names the proxy: its node id is <Workload>.<namespace of the SVID>. A Workload
	// document of that name describes it, unless Service (or Transparent mode) registers it from
	// the fields below.
	Workload       string
	Service        string
	ServiceAccount string // "" is the SVID's
	Address        string
	Mode           model.WorkloadMode
	InboundPort    uint32
	OutboundPort   uint32
	AppPort        uint32
	ServicePort    uint32
	// Upstreams are "service[.namespace][:port]=[127.0.0.1:]localPort".
	Upstreams []string
}

func (c *Config) validate() error {
	if c.SocketDir == "" {
		return errors.New("sidecar: a socket directory is required")
	}
	if c.Proxy.EnvoyPath != "" && c.Proxy.Workload == "" {
		return errors.New("sidecar: --workload is required with --envoy-path")
	}
	for _, u := range c.Proxy.Upstreams {
		if _, err := parseUpstream(u); err != nil {
			return err
		}
	}
	return nil
}

// registration builds the Workload the proxy settings describe, or nil when no Service is set
// outside Transparent mode (a Workload document named by the node id describes the proxy then).
func (p *ProxyConfig) registration(namespace, serviceAccount string) (*model.WorkloadDoc, error) {
	if p.Service == "" && p.Mode != model.ModeTransparent {
		return nil, nil
	}
	sa := p.ServiceAccount
	if sa == "" {
		sa = serviceAccount
	}
	w := &model.WorkloadDoc{
		TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindWorkload},
		Metadata: model.ObjectMeta{Name: p.Workload, Namespace: namespace},
		Spec: model.WorkloadSpec{
			Mode:    p.Mode,
			Service: p.Service, ServiceAccount: sa, Address: p.Address,
			InboundPort: p.InboundPort, OutboundPort: p.OutboundPort, AppPort: p.AppPort, ServicePort: p.ServicePort,
		},
	}
	for _, u := range p.Upstreams {
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
		return nil, fmt.Errorf("sidecar: workload flags: %s", strings.Join(msgs, "; "))
	}
	return w, nil
}

// parseUpstream reads "backend=127.0.0.1:9001", "backend.shop:8080=9001" and the like.
func parseUpstream(s string) (model.Upstream, error) {
	target, local, ok := strings.Cut(s, "=")
	if !ok {
		return model.Upstream{}, fmt.Errorf("sidecar: --upstream %q: want service[.namespace][:port]=[127.0.0.1:]localPort", s)
	}
	var u model.Upstream
	svc, port, hasPort := strings.Cut(target, ":")
	u.Service = svc
	if hasPort {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return u, fmt.Errorf("sidecar: --upstream %q: port %q", s, port)
		}
		u.Port = uint32(p)
	}
	if host, p, err := net.SplitHostPort(local); err == nil {
		if host != "127.0.0.1" {
			return u, fmt.Errorf("sidecar: --upstream %q: local listeners are on 127.0.0.1", s)
		}
		local = p
	}
	lp, err := strconv.ParseUint(local, 10, 16)
	if err != nil {
		return u, fmt.Errorf("sidecar: --upstream %q: local port %q", s, local)
	}
	u.LocalPort = uint32(lp)
	return u, nil
}
