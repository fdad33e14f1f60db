package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source"
)

// Options configure the ADS server.
type Options struct {
	Mesh     source.Source
	Registry *Registry
	Ledger   *snapshot.Ledger
	Cache    *snapshot.Cache
	Logger   *slog.Logger
	// Revoked reports whether a client certificate has been revoked (nil: none are).
	Revoked func(*x509.Certificate) bool
	// Limits bound what one proxy can make the server hold; zero fields take the defaults.
	Limits Limits
	// Now is the clock certificates are checked against; time.Now unless set.
	Now func() time.Time
	// RecheckInterval is how often open streams' certificates are checked (Run);
	// DefaultRecheckInterval unless set.
	RecheckInterval time.Duration
}

// Limits bound the state a proxy, or one holding a workload's SVID, makes the server keep
// (docs/xds.md, "Limits"). A request beyond one ends its stream with RESOURCE_EXHAUSTED or
// INVALID_ARGUMENT and a message naming the limit.
type Limits struct {
	// NodeBytes bounds the node (id and metadata) a stream registers: it is kept while the
	// stream lives. DefaultNodeBytes unless set.
	NodeBytes int
	// ResourceNames bounds the resource names a stream subscribes to, per type.
	// DefaultResourceNames unless set.
	ResourceNames int
	// StreamsPerNode bounds the streams open for one node at once: a proxy has one, two while it
	// reconnects. DefaultStreamsPerNode unless set.
	StreamsPerNode int
	// NodesPerIdentity bounds the nodes registered with one SPIFFE ID, connected or within their
	// grace period: the replicas of one workload. DefaultNodesPerIdentity unless set.
	NodesPerIdentity int
}

// Default limits.
const (
	DefaultNodeBytes        = 64 << 10
	DefaultResourceNames    = 16384
	DefaultStreamsPerNode   = 4
	DefaultNodesPerIdentity = 1024
	// MaxRequestBytes bounds one xDS or certificate request (GRPCOptions); Envoy's are a few
	// kilobytes, one naming every cluster of a large mesh a few hundred.
	MaxRequestBytes = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.NodeBytes <= 0 {
		l.NodeBytes = DefaultNodeBytes
	}
	if l.ResourceNames <= 0 {
		l.ResourceNames = DefaultResourceNames
	}
	if l.StreamsPerNode <= 0 {
		l.StreamsPerNode = DefaultStreamsPerNode
	}
	if l.NodesPerIdentity <= 0 {
		l.NodesPerIdentity = DefaultNodesPerIdentity
	}
	return l
}

// Server is the ADS service. Register it on a gRPC server whose TLS configuration verifies
// client certificates against the mesh trust bundle when they are presented.
type Server struct {
	opts    Options
	log     *slog.Logger
	xds     serverv3.Server
	limits  Limits
	now     func() time.Time
	recheck time.Duration
	conns   *conns // set by Credentials

	mu      sync.Mutex
	streams map[int64]*stream
	// resolved is the context of the last mesh a connecting proxy was checked against, so a
	// thousand proxies connecting at once resolve the mesh once.
	resolved *model.MeshContext
	of       *model.Mesh
}

type stream struct {
	peer  spiffeid.ID
	cert  *x509.Certificate
	delta bool
	// end ends the stream (guard.go).
	end context.CancelCauseFunc
	// node is the node the first request registered, and every later request is given
	// (pinned): go-control-plane takes the node of each request, so a request naming another
	// would otherwise be answered with that node's configuration.
	node   *corev3.Node
	nodeID string
	// names are the resource names a delta stream has subscribed to, by type, bounded by
	// Limits.ResourceNames.
	names map[string]map[string]struct{}
}

// New returns an ADS server answering from opts.Cache.
func New(ctx context.Context, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RecheckInterval <= 0 {
		opts.RecheckInterval = DefaultRecheckInterval
	}
	s := &Server{opts: opts, log: opts.Logger, streams: map[int64]*stream{}, limits: opts.Limits.withDefaults(), now: opts.Now, recheck: opts.RecheckInterval}
	s.xds = serverv3.NewServer(ctx, opts.Cache, s)
	return s
}

// Register adds the ADS service (state of the world and delta) to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads{s})
}

// GRPCOptions are the server options the control plane's gRPC server needs for long-lived xDS
// streams: keepalive pings both ways so dead proxies and half-open connections are noticed;
// requests bounded (MaxRequestBytes), and streams per connection (a proxy opens one).
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		grpc.MaxConcurrentStreams(256),
		// Reused handler goroutines (write buffers are shared by default): certificate renewals
		// are many small unary calls on the same server.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
}

// peerID returns the SPIFFE ID of the stream's client certificate and the certificate, refusing
// streams without one, or with one that has expired or been revoked.
func (s *Server) peerID(ctx context.Context) (spiffeid.ID, *x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, "no peer")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.VerifiedChains) == 0 || len(tlsInfo.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, "xDS needs a client certificate (the workload's SVID)")
	}
	cert := tlsInfo.State.PeerCertificates[0]
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return spiffeid.ID{}, nil, status.Errorf(codes.Unauthenticated, "client certificate is not an SVID: %v", err)
	}
	// The handshake checked the certificate then; a connection outlives it.
	if s.now().After(cert.NotAfter) {
		return spiffeid.ID{}, nil, errCertExpired
	}
	if s.opts.Revoked != nil && s.opts.Revoked(cert) {
		s.log.Warn("xDS stream refused: revoked certificate", "peer", id.String(), "serial", cert.SerialNumber.String())
		return spiffeid.ID{}, nil, errCertRevoked
	}
	return id, cert, nil
}

func (s *Server) open(ctx context.Context, id int64, delta bool) error {
	pid, cert, err := s.peerID(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.streams[id] = &stream{peer: pid, cert: cert, delta: delta, end: streamCancel(ctx)}
	s.mu.Unlock()
	return nil
}

func (s *Server) closed(id int64) {
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	s.mu.Unlock()
	if st == nil || st.nodeID == "" {
		return
	}
	s.opts.Registry.Disconnect(st.nodeID, id)
	s.opts.Ledger.Disconnected(st.nodeID, id)
	s.log.Info("proxy disconnected", "node", st.nodeID, "stream", id)
}

// register resolves the stream's node on its first request and checks its identity; later
// requests must name the same node (or none).
func (s *Server) register(id int64, node *corev3.Node) (*stream, error) {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st == nil {
		return nil, status.Error(codes.Internal, "unknown stream")
	}
	if st.nodeID != "" {
		if node != nil && node.GetId() != st.nodeID {
			s.log.Warn("proxy refused: a request named another node than its stream registered", "node", st.nodeID,
				"requested_node", truncate(node.GetId(), 128), "peer", st.peer.String(), "stream", id)
			return nil, status.Errorf(codes.PermissionDenied, "this stream is node %s; a request named node %q", st.nodeID, truncate(node.GetId(), 128))
		}
		return st, nil
	}
	nodeID := node.GetId()
	if nodeID == "" {
		return nil, status.Error(codes.InvalidArgument, "the first request must carry the node id")
	}
	if n := proto.Size(node); n > s.limits.NodeBytes {
		return nil, status.Errorf(codes.InvalidArgument, "the node is %d bytes, more than the %d allowed", n, s.limits.NodeBytes)
	}
	reg, err := s.resolve(nodeID, node, st.peer)
	if err == nil {
		err = s.opts.Registry.Connect(reg, id, s.limits)
	}
	if err != nil {
		s.log.Warn("proxy refused", "node", nodeID, "peer", st.peer.String(), "err", err)
		return nil, err
	}
	s.mu.Lock()
	st.nodeID, st.node = nodeID, node
	s.mu.Unlock()
	s.opts.Ledger.Connected(nodeID, st.peer.String(), st.delta)
	s.log.Info("proxy connected", "node", nodeID, "identity", st.peer.String(), "delta", st.delta, "stream", id)
	return st, nil
}

// truncate bounds client-chosen text before it reaches a log or an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// resolve finds the workload a node is and checks that its certificate proves the workload's
// identity.
func (s *Server) resolve(nodeID string, node *corev3.Node, peerID spiffeid.ID) (snapshot.Registration, error) {
	reg := snapshot.Registration{NodeID: nodeID, Identity: peerID}
	mesh, _ := s.opts.Mesh.Current()
	if mesh == nil {
		return reg, status.Error(codes.Unavailable, "the control plane has no valid mesh yet")
	}
	w := mesh.Workload(nodeID)
	if w == nil {
		fromMeta, err := workloadFromMetadata(nodeID, node)
		if err != nil {
			return reg, status.Errorf(codes.InvalidArgument, "node %s: %v", nodeID, err)
		}
		if fromMeta == nil {
			return reg, status.Errorf(codes.NotFound, "node %s: no Workload document by that name, and the node registered no workload", nodeID)
		}
		w, reg.Workload = fromMeta, fromMeta
	}
	p, err := model.NewProxy(s.meshContext(mesh), w)
	if err != nil {
		return reg, status.Errorf(codes.InvalidArgument, "node %s: %v", nodeID, err)
	}
	if p.Identity != peerID {
		return reg, status.Errorf(codes.PermissionDenied, "node %s is workload identity %s, but its certificate proves %s", nodeID, p.Identity, peerID)
	}
	return reg, nil
}

// meshContext returns the resolved context of mesh, built once per mesh.
func (s *Server) meshContext(mesh *model.Mesh) *model.MeshContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.of != mesh {
		s.resolved, s.of = model.NewMeshContext(mesh), mesh
	}
	return s.resolved
}

// workloadFromMetadata decodes the workload an agent registered in node metadata, strictly; nil
// when there is none. Its name and namespace must be the node id's.
func workloadFromMetadata(nodeID string, node *corev3.Node) (*model.WorkloadDoc, error) {
	v, ok := node.GetMetadata().GetFields()[bootstrap.MetadataWorkloadKey]
	if !ok {
		return nil, nil
	}
	raw, err := protojson.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", bootstrap.MetadataWorkloadKey, err)
	}
	var w model.WorkloadDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", bootstrap.MetadataWorkloadKey, err)
	}
	w.APIVersion, w.Kind = model.APIVersion, model.KindWorkload
	if model.NodeID(&w) != nodeID {
		return nil, fmt.Errorf("metadata %s names workload %s, not the node id", bootstrap.MetadataWorkloadKey, model.NodeID(&w))
	}
	return &w, nil
}

func (s *Server) nodeOf(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		return st.nodeID
	}
	return ""
}

// OnStreamOpen implements serverv3.Callbacks.
func (s *Server) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, id, false)
}

// OnStreamClosed implements serverv3.Callbacks.
func (s *Server) OnStreamClosed(id int64, _ *corev3.Node) { s.closed(id) }

// OnStreamRequest registers the node on its first request, pins it on every request, and
// records ACKs and NACKs.
func (s *Server) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	st, err := s.request(id, req)
	if err != nil {
		return err
	}
	req.Node = st.node
	// A state-of-the-world request names the whole subscription.
	if n := len(req.GetResourceNames()); n > s.limits.ResourceNames {
		return status.Errorf(codes.ResourceExhausted, "%d %s names in one request, more than the %d allowed", n, req.GetTypeUrl(), s.limits.ResourceNames)
	}
	s.record(st, id, req, func() {
		if req.GetVersionInfo() != "" {
			s.opts.Ledger.Acked(st.nodeID, req.GetTypeUrl(), req.GetVersionInfo())
		}
	})
	return nil
}

// xdsRequest is what state-of-the-world and delta requests have in common.
type xdsRequest interface {
	GetNode() *corev3.Node
	GetTypeUrl() string
	GetResponseNonce() string
	GetErrorDetail() *rpcstatus.Status
}

// request registers the stream's node on its first request and checks that the stream's node
// and the type asked for are ones it may have. The caller pins the node on the request.
func (s *Server) request(id int64, req xdsRequest) (*stream, error) {
	st, err := s.register(id, req.GetNode())
	if err != nil {
		return nil, err
	}
	if !slices.Contains(snapshot.TypeURLs, req.GetTypeUrl()) {
		// Every type would be a watch held for the stream's life.
		return nil, status.Errorf(codes.InvalidArgument, "type %q is not served", truncate(req.GetTypeUrl(), 128))
	}
	return st, nil
}

// record records a NACK, or calls ack.
func (s *Server) record(st *stream, id int64, req xdsRequest, ack func()) {
	s.opts.Ledger.Requested(st.nodeID, req.GetTypeUrl())
	if detail := req.GetErrorDetail(); detail != nil {
		msg := truncate(detail.GetMessage(), 4096)
		nack := s.opts.Ledger.Nacked(st.nodeID, id, req.GetTypeUrl(), req.GetResponseNonce(), msg)
		s.log.Warn("proxy rejected configuration (NACK); it keeps its previous one", "node", st.nodeID, "type", req.GetTypeUrl(),
			"version", nack.Version, "documents", nack.Documents, "error", msg)
		return
	}
	ack()
}

// OnStreamResponse records what was sent.
func (s *Server) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	if node := s.nodeOf(id); node != "" {
		s.opts.Ledger.Sent(node, id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
	}
}

// deltaStream is a delta stream's key in the state shared with SotW streams. go-control-plane
// numbers SotW and delta streams each from 1, so a SotW and a delta stream can carry the same
// id; delta ids are kept negative to stay apart (a collision attributed one proxy's requests
// and ACKs to another).
func deltaStream(id int64) int64 { return -id }

// OnDeltaStreamOpen implements serverv3.Callbacks.
func (s *Server) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, deltaStream(id), true)
}

// OnDeltaStreamClosed implements serverv3.Callbacks.
func (s *Server) OnDeltaStreamClosed(id int64, _ *corev3.Node) { s.closed(deltaStream(id)) }

// OnStreamDeltaRequest registers the node on its first request, pins it on every request,
// bounds the stream's subscriptions, and records ACKs and NACKs.
func (s *Server) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	id = deltaStream(id)
	st, err := s.request(id, req)
	if err != nil {
		return err
	}
	req.Node = st.node
	if err := s.subscribe(st, req); err != nil {
		return err
	}
	s.record(st, id, req, func() {
		if req.GetResponseNonce() != "" {
			s.opts.Ledger.AckedNonce(st.nodeID, id, req.GetTypeUrl(), req.GetResponseNonce())
		}
	})
	return nil
}

// subscribe follows a delta stream's subscriptions, which accumulate over its requests, and
// refuses one that would exceed Limits.ResourceNames for its type.
func (s *Server) subscribe(st *stream, req *discoveryv3.DeltaDiscoveryRequest) error {
	sub, unsub := req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe()
	if len(sub) == 0 && len(unsub) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.names == nil {
		st.names = map[string]map[string]struct{}{}
	}
	names := st.names[req.GetTypeUrl()]
	if names == nil {
		names = map[string]struct{}{}
		st.names[req.GetTypeUrl()] = names
	}
	for _, n := range unsub {
		delete(names, n)
	}
	for _, n := range sub {
		if _, ok := names[n]; ok {
			continue
		}
		if len(names) >= s.limits.ResourceNames {
			return status.Errorf(codes.ResourceExhausted, "more than the %d %s names allowed on one stream", s.limits.ResourceNames, req.GetTypeUrl())
		}
		names[n] = struct{}{}
	}
	return nil
}

// OnStreamDeltaResponse records what was sent.
func (s *Server) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	id = deltaStream(id)
	if node := s.nodeOf(id); node != "" {
		s.opts.Ledger.Sent(node, id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
	}
}

// OnFetchRequest refuses REST polling: proxies must stream, authenticated.
func (s *Server) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return errors.New("server: REST xDS is not served")
}

// OnFetchResponse implements serverv3.Callbacks.
func (s *Server) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}
