package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// A stream's client certificate is checked when the stream opens and then every
// RecheckInterval: one that has expired or been revoked ends the stream, and its connection, so
// that a proxy keeps receiving configuration only while its SVID is good. Envoy opens its next
// stream on a new connection, with the SVID it holds then.

// DefaultRecheckInterval is how often open streams' certificates are checked: the CA rereads
// its revocation list as often (ca.DefaultReloadInterval).
const DefaultRecheckInterval = 2 * time.Second

// closeConnDelay lets the stream's status reach the proxy before its connection closes, so
// Envoy logs why ("client certificate expired") rather than a reset.
const closeConnDelay = 500 * time.Millisecond

// Why a stream was ended by the server.
var (
	errCertExpired = status.Error(codes.Unauthenticated, "the client certificate has expired")
	errCertRevoked = status.Error(codes.PermissionDenied, "the client certificate has been revoked")
)

// ads is the ADS service the gRPC server calls: go-control-plane's, with every stream given a
// context the server can end (streamCancel) and the stream's connection closed when that
// happens for a certificate.
type ads struct{ s *Server }

func (a ads) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	ctx, cancel := context.WithCancelCause(st.Context())
	defer cancel(nil)
	err := a.s.xds.StreamAggregatedResources(&guarded[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]{BidiStreamingServer: st, ctx: withStreamCancel(ctx, cancel)})
	return a.s.ended(ctx, err)
}

func (a ads) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	ctx, cancel := context.WithCancelCause(st.Context())
	defer cancel(nil)
	err := a.s.xds.DeltaAggregatedResources(&guarded[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]{BidiStreamingServer: st, ctx: withStreamCancel(ctx, cancel)})
	return a.s.ended(ctx, err)
}

// ended is a stream's final status: why the server ended it, if it did. A certificate that
// expired or was revoked also closes the connection (after closeConnDelay).
func (s *Server) ended(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	if !errors.Is(cause, errCertExpired) && !errors.Is(cause, errCertRevoked) {
		return err
	}
	if p, ok := peer.FromContext(ctx); ok && s.conns != nil {
		s.conns.closeLater(p.Addr, closeConnDelay)
	}
	return cause
}

type streamCancelKey struct{}

func withStreamCancel(ctx context.Context, cancel context.CancelCauseFunc) context.Context {
	return context.WithValue(ctx, streamCancelKey{}, cancel)
}

// streamCancel is what ends the stream whose context ctx is (OnStreamOpen's).
func streamCancel(ctx context.Context) context.CancelCauseFunc {
	if c, ok := ctx.Value(streamCancelKey{}).(context.CancelCauseFunc); ok {
		return c
	}
	return func(error) {}
}

// guarded is a gRPC stream that stops when its context ends: Recv returns the cause even while
// the client sends nothing, so go-control-plane's stream loop ends, and Send sends nothing more.
type guarded[Req, Resp any] struct {
	grpc.BidiStreamingServer[Req, Resp]
	ctx context.Context
	// recv carries the result of the receive in flight, if one is.
	recv    chan received[Req]
	pending bool
}

type received[Req any] struct {
	req *Req
	err error
}

func (g *guarded[Req, Resp]) Context() context.Context { return g.ctx }

func (g *guarded[Req, Resp]) Send(r *Resp) error {
	if g.ctx.Err() != nil {
		return context.Cause(g.ctx)
	}
	return g.BidiStreamingServer.Send(r)
}

// Recv receives in a goroutine so that the stream's end interrupts it. The goroutine outlives
// an interrupted Recv only until gRPC ends the stream, which happens when the handler returns.
func (g *guarded[Req, Resp]) Recv() (*Req, error) {
	if g.ctx.Err() != nil {
		return nil, context.Cause(g.ctx)
	}
	if !g.pending {
		if g.recv == nil {
			g.recv = make(chan received[Req], 1)
		}
		g.pending = true
		go func() {
			r, err := g.BidiStreamingServer.Recv()
			g.recv <- received[Req]{r, err}
		}()
	}
	select {
	case r := <-g.recv:
		g.pending = false
		return r.req, r.err
	case <-g.ctx.Done():
		return nil, context.Cause(g.ctx)
	}
}

// Credentials wraps the ADS server's transport credentials so that the server can close the
// connection of a stream it ends for its certificate: Envoy would open its next stream on the
// same connection, with the same certificate, and be refused there forever. Without it, only
// the stream ends.
func (s *Server) Credentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	s.conns = &conns{m: map[string]net.Conn{}}
	return &trackingCreds{TransportCredentials: c, conns: s.conns}
}

// conns are the open connections by remote address (what a stream's peer names).
type conns struct {
	mu sync.Mutex
	m  map[string]net.Conn
}

func (c *conns) closeLater(addr net.Addr, d time.Duration) {
	if addr == nil {
		return
	}
	c.mu.Lock()
	conn := c.m[addr.String()]
	c.mu.Unlock()
	if conn != nil {
		time.AfterFunc(d, func() { _ = conn.Close() })
	}
}

type trackingCreds struct {
	credentials.TransportCredentials
	conns *conns
}

func (t *trackingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := t.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	tc := &trackedConn{Conn: conn, conns: t.conns, key: raw.RemoteAddr().String()}
	t.conns.mu.Lock()
	t.conns.m[tc.key] = tc
	t.conns.mu.Unlock()
	return tc, info, nil
}

func (t *trackingCreds) Clone() credentials.TransportCredentials {
	return &trackingCreds{TransportCredentials: t.TransportCredentials.Clone(), conns: t.conns}
}

// trackedConn leaves the registry when closed.
type trackedConn struct {
	net.Conn
	conns *conns
	key   string
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.conns.mu.Lock()
		if c.conns.m[c.key] == c {
			delete(c.conns.m, c.key)
		}
		c.conns.mu.Unlock()
	})
	return c.Conn.Close()
}

// Run checks the certificates of open streams every RecheckInterval until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.checkStreams(s.now())
		}
	}
}

// checkStreams ends every stream whose certificate has expired by now or been revoked.
func (s *Server) checkStreams(now time.Time) {
	type victim struct {
		st    *stream
		cause error
	}
	var ended []victim
	s.mu.Lock()
	for _, st := range s.streams {
		switch {
		case now.After(st.cert.NotAfter):
			ended = append(ended, victim{st, errCertExpired})
		case s.opts.Revoked != nil && s.opts.Revoked(st.cert):
			ended = append(ended, victim{st, errCertRevoked})
		}
	}
	s.mu.Unlock()
	for _, v := range ended {
		s.log.Warn("xDS stream closed: its client certificate is no longer good", "peer", v.st.peer.String(), "node", v.st.nodeID,
			"serial", v.st.cert.SerialNumber.String(), "not_after", v.st.cert.NotAfter, "reason", status.Convert(v.cause).Message())
		v.st.end(v.cause)
	}
}
