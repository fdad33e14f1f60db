package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/securefile"
	"github.com/portcullis/portcullis/telemetry/watch"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/snapshot"
)

// Grace periods of the registry, documented in docs/xds.md.
const (
	// DefaultDisconnectGrace keeps a disconnected proxy's endpoint while it reconnects.
	DefaultDisconnectGrace = 5 * time.Second
	// DefaultRestartGrace keeps the endpoints saved before a control-plane restart while the
	// proxies reconnect to the new process.
	DefaultRestartGrace = 30 * time.Second
)

// Registry is the set of proxies the control plane serves. It implements snapshot.Registry.
type Registry struct {
	log             *slog.Logger
	disconnectGrace time.Duration
	file            string // where registrations are saved; "" saves nothing

	mu    sync.Mutex
	nodes map[string]*registration
	// perIdentity counts the nodes registered with each SPIFFE ID (Limits.NodesPerIdentity).
	perIdentity identityCounts
	changed     watch.Signal
	dirty       bool
}

var _ snapshot.Registry = (*Registry)(nil)

type registration struct {
	snapshot.Registration
	streams      map[int64]bool
	disconnected time.Time // zero while connected
	grace        time.Duration
}

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	Logger          *slog.Logger
	DisconnectGrace time.Duration
	RestartGrace    time.Duration
	// DataDir, when set, keeps registrations across restarts (file registrations.json, 0600).
	DataDir string
}

// NewRegistry returns a registry, loading the registrations saved by a previous process; those
// count as disconnected and expire after the restart grace period unless their proxy returns.
func NewRegistry(opts RegistryOptions) (*Registry, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DisconnectGrace <= 0 {
		opts.DisconnectGrace = DefaultDisconnectGrace
	}
	if opts.RestartGrace <= 0 {
		opts.RestartGrace = DefaultRestartGrace
	}
	r := &Registry{log: opts.Logger, disconnectGrace: opts.DisconnectGrace, nodes: map[string]*registration{}, perIdentity: identityCounts{}}
	if opts.DataDir != "" {
		r.file = filepath.Join(opts.DataDir, "registrations.json")
		saved, err := loadRegistrations(r.file)
		if err != nil {
			// A damaged file only costs the restart grace: start without it.
			r.log.Warn("ignoring saved proxy registrations", "err", err)
		}
		now := time.Now()
		for _, s := range saved {
			r.nodes[s.NodeID] = &registration{Registration: s, streams: map[int64]bool{}, disconnected: now, grace: opts.RestartGrace}
			r.perIdentity[s.Identity]++
		}
		if len(saved) > 0 {
			r.log.Info("restored proxy registrations; they expire unless their proxies reconnect", "count", len(saved), "grace", opts.RestartGrace)
		}
	}
	return r, nil
}

// Current returns the registrations and a channel closed when they change.
func (r *Registry) Current() ([]snapshot.Registration, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]snapshot.Registration, 0, len(r.nodes))
	for _, n := range r.nodes {
		out = append(out, n.Registration)
	}
	slices.SortFunc(out, func(a, b snapshot.Registration) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out, r.changed.Changed()
}

// notify wakes waiters; callers hold r.mu.
func (r *Registry) notify() {
	r.changed.Notify()
	r.dirty = true
}

// Connect registers a stream of a proxy. A proxy reconnecting with a different workload or
// identity replaces its registration. It refuses a stream beyond limits.StreamsPerNode for the
// node, or a node beyond limits.NodesPerIdentity for the identity.
func (r *Registry) Connect(reg snapshot.Registration, stream int64, limits Limits) error {
	limits = limits.withDefaults()
	r.mu.Lock()
	defer r.mu.Unlock()
	reg.Connected = true
	n, ok := r.nodes[reg.NodeID]
	if ok && len(n.streams) >= limits.StreamsPerNode {
		return status.Errorf(codes.ResourceExhausted, "node %s has %d streams open, the most allowed", reg.NodeID, len(n.streams))
	}
	if (!ok || n.Identity != reg.Identity) && r.perIdentity[reg.Identity] >= limits.NodesPerIdentity {
		return status.Errorf(codes.ResourceExhausted, "%s has %d nodes registered (connected or within their grace period), the most allowed", reg.Identity, r.perIdentity[reg.Identity])
	}
	if !ok {
		n = &registration{streams: map[int64]bool{}}
		r.nodes[reg.NodeID] = n
	} else {
		r.perIdentity.dec(n.Identity)
	}
	r.perIdentity[reg.Identity]++
	n.Registration = reg
	n.streams[stream] = true
	n.disconnected = time.Time{}
	r.notify()
	return nil
}

// Disconnect ends a stream; when a proxy's last stream ends, its grace period starts.
func (r *Registry) Disconnect(node string, stream int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[node]
	if !ok || !n.streams[stream] {
		return
	}
	delete(n.streams, stream)
	if len(n.streams) == 0 {
		n.Connected = false
		n.disconnected, n.grace = time.Now(), r.disconnectGrace
		r.notify()
	}
}

// Run expires registrations whose grace period ended and saves changes, until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.save()
		case <-tick.C:
		}
		r.expire(time.Now())
		if err := r.save(); err != nil {
			r.log.Warn("saving proxy registrations", "err", err)
		}
	}
}

func (r *Registry) expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for node, n := range r.nodes {
		if !n.disconnected.IsZero() && now.Sub(n.disconnected) >= n.grace {
			delete(r.nodes, node)
			r.perIdentity.dec(n.Identity)
			r.log.Info("proxy gone: endpoint removed", "node", node)
			r.notify()
		}
	}
}

// savedRegistration is the on-disk form of a registration.
type savedRegistration struct {
	NodeID   string             `json:"node"`
	Identity string             `json:"identity,omitempty"`
	Workload *model.WorkloadDoc `json:"workload,omitempty"`
}

func (r *Registry) save() error {
	r.mu.Lock()
	if r.file == "" || !r.dirty {
		r.mu.Unlock()
		return nil
	}
	r.dirty = false
	list := make([]savedRegistration, 0, len(r.nodes))
	for _, n := range r.nodes {
		s := savedRegistration{NodeID: n.NodeID, Workload: n.Workload}
		if !n.Identity.IsZero() {
			s.Identity = n.Identity.String()
		}
		list = append(list, s)
	}
	r.mu.Unlock()
	slices.SortFunc(list, func(a, b savedRegistration) int { return strings.Compare(a.NodeID, b.NodeID) })
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("server: saving registrations: %w", err)
	}
	return securefile.WriteAtomic(r.file, data)
}

func loadRegistrations(file string) ([]snapshot.Registration, error) {
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("server: loading registrations: %w", err)
	}
	var list []savedRegistration
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("server: %s: %w", file, err)
	}
	out := make([]snapshot.Registration, 0, len(list))
	for _, s := range list {
		reg := snapshot.Registration{NodeID: s.NodeID, Workload: s.Workload}
		if s.Identity != "" {
			id, err := spiffeid.FromString(s.Identity)
			if err != nil {
				continue
			}
			reg.Identity = id
		}
		out = append(out, reg)
	}
	return out, nil
}

// identityCounts counts nodes by identity; an identity with none has no entry.
type identityCounts map[spiffeid.ID]int

func (c identityCounts) dec(id spiffeid.ID) {
	if c[id] <= 1 {
		delete(c, id)
		return
	}
	c[id]--
}
