//go:build !agentonly

package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/server"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/translate"
)

// xdsPlane is the control plane's xDS side: the proxy registry, the ACK/NACK ledger, the
// snapshot controller and the ADS service.
type xdsPlane struct {
	registry   *server.Registry
	ledger     *snapshot.Ledger
	controller *snapshot.Controller
	ads        *server.Server
}

type xdsConfig struct {
	mesh    source.Source
	dataDir string
	// authzAddr and authzID are the ext_authz service proxies call and the identity it must prove.
	authzAddr string
	authzID   spiffeid.ID
	tracer    trace.TracerProvider
	// revoked reports revoked client certificates (nil: none are).
	revoked func(*x509.Certificate) bool
}

func newXDSPlane(ctx context.Context, g *globals, metrics *telemetry.Metrics, cfg xdsConfig) (*xdsPlane, error) {
	log := g.log.With("component", "xds")
	registry, err := server.NewRegistry(server.RegistryOptions{Logger: log, DataDir: cfg.dataDir})
	if err != nil {
		return nil, err
	}
	ledger, err := snapshot.NewLedger(metrics.Meter("xds/snapshot"))
	if err != nil {
		return nil, err
	}
	c := snapshot.NewCache(cache.NewSnapshotCache(true, cache.IDHash{}, nil), ledger)
	ctl, err := snapshot.NewController(cfg.mesh, registry, c, ledger, snapshot.Options{
		Translate:      translate.Options{AuthzAddress: cfg.authzAddr, AuthzID: cfg.authzID},
		Logger:         log,
		Meter:          metrics.Meter("xds/snapshot"),
		TracerProvider: cfg.tracer,
	})
	if err != nil {
		return nil, err
	}
	ads := server.New(ctx, server.Options{Mesh: cfg.mesh, Registry: registry, Ledger: ledger, Cache: c, Logger: log, Revoked: cfg.revoked})
	return &xdsPlane{registry: registry, ledger: ledger, controller: ctl, ads: ads}, nil
}

// endpoints adds endpoints that do not come from connected proxies (Kubernetes EndpointSlices).
func (x *xdsPlane) endpoints(src snapshot.EndpointSource) { x.controller.SetEndpoints(src) }

// register adds ADS to the control plane's gRPC server.
func (x *xdsPlane) register(g *grpc.Server) { x.ads.Register(g) }

// run starts the registry and the controller in the group.
func (x *xdsPlane) run(ctx context.Context, group *errgroup.Group) {
	group.Go(func() error { return x.registry.Run(ctx) })
	group.Go(func() error { return x.controller.Run(ctx) })
}

// handle adds the proxy debug pages to the admin server.
func (x *xdsPlane) handle(admin *telemetry.Admin) {
	admin.Handle("/debug/proxies", telemetry.JSONHandler(func() any { return x.ledger.Status() }))
	admin.Handle("/debug/proxies/config", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		node := r.URL.Query().Get("node")
		res, err := x.controller.Resources(node)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		for _, url := range []string{resource.ListenerType, resource.ClusterType, resource.EndpointType} {
			out, err := translate.YAML(res[url])
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "# %s\n%s", url, out)
		}
	}))
}
