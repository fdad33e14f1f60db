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
}

// Server is the ADS service. Register it on a gRPC server whose TLS configuration verifies
// client certificates against the mesh trust bundle when they are presented.
type Server struct {
	opts Options
	log  *slog.Logger
	xds  serverv3.Server

	mu      sync.Mutex
	streams map[int64]*stream
	// resolved is the context of the last mesh a connecting proxy was checked against, so a
	// thousand proxies connecting at once resolve the mesh once.
	resolved *model.MeshContext
	of       *model.Mesh
}

type stream struct {
	peer  spiffeid.ID
	delta bool
	node  string // set once the first request registered the node
}

// New returns an ADS server answering from opts.Cache.
func New(ctx context.Context, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger, streams: map[int64]*stream{}}
	s.xds = serverv3.NewServer(ctx, opts.Cache, s)
	return s
}

// Register adds the ADS service (state of the world and delta) to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// GRPCOptions are the server options the control plane's gRPC server needs for long-lived xDS
// streams: keepalive pings both ways so dead proxies and half-open connections are noticed.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(1 << 16),
		// Reused handler goroutines (write buffers are shared by default): certificate renewals
		// are many small unary calls on the same server.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
}

// peerID returns the SPIFFE ID of the stream's client certificate, refusing streams without one,
// or with a revoked one.
func (s *Server) peerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no peer")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.VerifiedChains) == 0 || len(tlsInfo.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "xDS needs a client certificate (the workload's SVID)")
	}
	cert := tlsInfo.State.PeerCertificates[0]
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "client certificate is not an SVID: %v", err)
	}
	if s.opts.Revoked != nil && s.opts.Revoked(cert) {
		s.log.Warn("xDS stream refused: revoked certificate", "peer", id.String(), "serial", cert.SerialNumber.String())
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, "client certificate has been revoked")
	}
	return id, nil
}

func (s *Server) open(ctx context.Context, id int64, delta bool) error {
	pid, err := s.peerID(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.streams[id] = &stream{peer: pid, delta: delta}
	s.mu.Unlock()
	return nil
}

func (s *Server) closed(id int64, _ *corev3.Node) {
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	s.mu.Unlock()
	if st == nil || st.node == "" {
		return
	}
	s.opts.Registry.Disconnect(st.node, id)
	s.opts.Ledger.Disconnected(st.node, id)
	s.log.Info("proxy disconnected", "node", st.node, "stream", id)
}

// register resolves the stream's node on its first request and checks its identity.
func (s *Server) register(id int64, node *corev3.Node) (string, error) {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st == nil {
		return "", status.Error(codes.Internal, "unknown stream")
	}
	if st.node != "" {
		return st.node, nil
	}
	nodeID := node.GetId()
	if nodeID == "" {
		return "", status.Error(codes.InvalidArgument, "the first request must carry the node id")
	}
	reg, err := s.resolve(nodeID, node, st.peer)
	if err != nil {
		s.log.Warn("proxy refused", "node", nodeID, "peer", st.peer.String(), "err", err)
		return "", err
	}
	s.mu.Lock()
	st.node = nodeID
	s.mu.Unlock()
	s.opts.Registry.Connect(reg, id)
	s.opts.Ledger.Connected(nodeID, st.peer.String(), st.delta)
	s.log.Info("proxy connected", "node", nodeID, "identity", st.peer.String(), "delta", st.delta, "stream", id)
	return nodeID, nil
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
		return st.node
	}
	return ""
}

// OnStreamOpen implements serverv3.Callbacks.
func (s *Server) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return s.open(ctx, id, false)
}

// OnStreamClosed implements serverv3.Callbacks.
func (s *Server) OnStreamClosed(id int64, node *corev3.Node) { s.closed(id, node) }

// OnStreamRequest registers the node on its first request and records ACKs and NACKs.
func (s *Server) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	return s.request(id, req, func(node string) {
		if req.GetVersionInfo() != "" {
			s.opts.Ledger.Acked(node, req.GetTypeUrl(), req.GetVersionInfo())
		}
	})
}

// xdsRequest is what state-of-the-world and delta requests have in common.
type xdsRequest interface {
	GetNode() *corev3.Node
	GetTypeUrl() string
	GetResponseNonce() string
	GetErrorDetail() *rpcstatus.Status
}

// request registers the stream's node on its first request, then records a NACK, or calls ack.
func (s *Server) request(id int64, req xdsRequest, ack func(node string)) error {
	node, err := s.register(id, req.GetNode())
	if err != nil {
		return err
	}
	s.opts.Ledger.Requested(node, req.GetTypeUrl())
	if detail := req.GetErrorDetail(); detail != nil {
		nack := s.opts.Ledger.Nacked(node, id, req.GetTypeUrl(), req.GetResponseNonce(), detail.GetMessage())
		s.log.Warn("proxy rejected configuration (NACK); it keeps its previous one", "node", node, "type", req.GetTypeUrl(),
			"version", nack.Version, "documents", nack.Documents, "error", detail.GetMessage())
		return nil
	}
	ack(node)
	return nil
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
func (s *Server) OnDeltaStreamClosed(id int64, node *corev3.Node) { s.closed(deltaStream(id), node) }

// OnStreamDeltaRequest registers the node on its first request and records ACKs and NACKs.
func (s *Server) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	id = deltaStream(id)
	return s.request(id, req, func(node string) {
		if req.GetResponseNonce() != "" {
			s.opts.Ledger.AckedNonce(node, id, req.GetTypeUrl(), req.GetResponseNonce())
		}
	})
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
