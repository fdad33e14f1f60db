package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/translate"
)

// PlaneConfig configures the control plane's xDS side.
type PlaneConfig struct {
	Mesh source.Source
	// Endpoints adds endpoints that do not come from connected proxies (Kubernetes
	// EndpointSlices); nil in local mode.
	Endpoints snapshot.EndpointSource
	// DataDir keeps proxy registrations across restarts; "" keeps none.
	DataDir   string
	Translate translate.Options
	// Revoked reports revoked client certificates (nil: none are).
	Revoked        func(*x509.Certificate) bool
	Logger         *slog.Logger
	Meter          metric.Meter // nil: no metrics
	TracerProvider trace.TracerProvider
	// Limits bound what one proxy can make the ADS server hold; zero fields take the defaults.
	Limits Limits
	// DisconnectGrace and Debounce override the registry's and the controller's defaults (tests).
	DisconnectGrace time.Duration
	Debounce        time.Duration
}

// Plane is the control plane's xDS side, wired once for the control plane, the tests and the
// convergence benchmark: the registry of connected proxies, the ACK/NACK ledger, the snapshot
// controller and the ADS service.
type Plane struct {
	Registry   *Registry
	Ledger     *snapshot.Ledger
	Controller *snapshot.Controller
	ADS        *Server
}

// NewPlane wires the xDS side; ctx bounds the ADS service's stream handling.
func NewPlane(ctx context.Context, cfg PlaneConfig) (*Plane, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	registry, err := NewRegistry(RegistryOptions{Logger: cfg.Logger, DataDir: cfg.DataDir, DisconnectGrace: cfg.DisconnectGrace})
	if err != nil {
		return nil, err
	}
	ledger, err := snapshot.NewLedger(cfg.Meter)
	if err != nil {
		return nil, err
	}
	c := snapshot.NewCache(cache.NewSnapshotCache(true, cache.IDHash{}, nil), ledger)
	ctl, err := snapshot.NewController(cfg.Mesh, registry, c, ledger, snapshot.Options{
		Translate: cfg.Translate, Endpoints: cfg.Endpoints, Debounce: cfg.Debounce,
		Logger: cfg.Logger, Meter: cfg.Meter, TracerProvider: cfg.TracerProvider,
	})
	if err != nil {
		return nil, err
	}
	ads := New(ctx, Options{Mesh: cfg.Mesh, Registry: registry, Ledger: ledger, Cache: c, Logger: cfg.Logger, Revoked: cfg.Revoked, Limits: cfg.Limits})
	return &Plane{Registry: registry, Ledger: ledger, Controller: ctl, ADS: ads}, nil
}

// Register adds ADS to a gRPC server.
func (p *Plane) Register(g *grpc.Server) { p.ADS.Register(g) }

// Credentials wraps the transport credentials of the gRPC server ADS is registered on, so that a
// stream ended for its certificate closes its connection too (Server.Credentials).
func (p *Plane) Credentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	return p.ADS.Credentials(c)
}

// Run keeps the registry and every proxy's snapshot up to date, and checks the certificates of
// open streams, until ctx ends.
func (p *Plane) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Registry.Run(gctx) })
	g.Go(func() error { return p.Controller.Run(gctx) })
	g.Go(func() error { return p.ADS.Run(gctx) })
	return g.Wait()
}

// ProxyConfigHandler serves a proxy's current resources as YAML, every type in the order Envoy
// applies them (`portcullis proxy config`): ?node=<node id>.
func (p *Plane) ProxyConfigHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		node := r.URL.Query().Get("node")
		res, err := p.Controller.Resources(node)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		for _, url := range snapshot.TypeURLs {
			out, err := translate.YAML(res[url])
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "# %s\n%s", url, out)
		}
	})
}
