package server

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/bootstrap"
)

// cartMeta registers workload cart-1 of service cart through node metadata, as its agent does.
func cartMeta(t *testing.T) *structpb.Struct {
	t.Helper()
	meta, err := structpb.NewStruct(map[string]any{bootstrap.MetadataWorkloadKey: map[string]any{
		"metadata": map[string]any{"name": "cart-1", "namespace": "shop"},
		"spec":     map[string]any{"service": "cart", "address": "127.0.0.9", "inboundPort": 15002, "appPort": 8081},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return meta
}

// wantEnd reads the stream until it ends and checks its status; it fails if a response
// carries any resource of forbidden.
func wantEnd(t *testing.T, c *adsClient, code codes.Code, msg string, forbidden ...string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-c.resps:
			for _, n := range names(t, r) {
				if slices.Contains(forbidden, n) {
					t.Fatalf("the stream was sent %s", n)
				}
			}
		case err := <-c.errs:
			if grpcstatus.Code(err) != code || !strings.Contains(err.Error(), msg) {
				t.Fatalf("stream ended with %v, want %s containing %q", err, code, msg)
			}
			return
		case <-deadline:
			t.Fatalf("the stream did not end (want %s: %s)", code, msg)
		}
	}
}

// A proxy cannot switch its stream to another node after the first request: go-control-plane
// takes the node of every request, and answered with the other node's listeners and clusters.
func TestNodeIsPinnedSotW(t *testing.T) {
	f := newFixture(t, meshDocs)
	cart := f.ads(t, "spiffe://example.org/ns/shop/sa/cart", "cart-1.shop", cartMeta(t))
	cart.send(resource.ClusterType, "", "", nil)
	cartClusters := names(t, cart.mustRecv())

	web := f.ads(t, "spiffe://example.org/ns/shop/sa/web", "web-1.shop", nil)
	web.send(resource.ClusterType, "", "", nil)
	r := web.mustRecv()
	// The attack: the ACK names cart's node.
	web.node = &corev3.Node{Id: "cart-1.shop"}
	web.send(resource.ClusterType, r.GetVersionInfo(), r.GetNonce(), nil)
	wantEnd(t, web, codes.PermissionDenied, "this stream is node web-1.shop", "inbound|8081|app")
	if !slices.Contains(cartClusters, "inbound|8081|app") {
		t.Fatalf("cart's own clusters %v: the test would prove nothing", cartClusters)
	}
}

func TestNodeIsPinnedDelta(t *testing.T) {
	f := newFixture(t, meshDocs)
	cart := f.ads(t, "spiffe://example.org/ns/shop/sa/cart", "cart-1.shop", cartMeta(t))
	cart.send(resource.ClusterType, "", "", nil)
	cart.mustRecv()

	d := f.delta(t, f.ca.Issue(t, "spiffe://example.org/ns/shop/sa/web", time.Hour), "web-1.shop")
	d.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	first := d.mustRecv(t)
	// The attack: the ACK names cart's node.
	d.send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "cart-1.shop"}, TypeUrl: resource.ClusterType, ResponseNonce: first.GetNonce()})
	err := d.end(t)
	if grpcstatus.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "this stream is node web-1.shop") {
		t.Fatalf("stream ended with %v", err)
	}
	for _, r := range d.seen {
		for _, res := range r.GetResources() {
			if res.GetName() == "inbound|8081|app" {
				t.Fatal("the delta stream was sent cart's cluster")
			}
		}
	}
}

// A stream whose certificate expires, or is revoked, while it is open is ended, and so is its
// connection, so the proxy reconnects with the SVID it holds now; until then nothing more is
// sent to it. A new stream on the old connection is refused.
func TestStreamsEndWhenTheCertificateGoesBad(t *testing.T) {
	var revoked atomic.Pointer[x509.Certificate]
	f := newFixture(t, meshDocs, func(c *PlaneConfig) {
		c.Revoked = func(cert *x509.Certificate) bool {
			r := revoked.Load()
			return r != nil && r.SerialNumber.Cmp(cert.SerialNumber) == 0
		}
	})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	f.plane.ADS.now = func() time.Time { return time.Unix(0, clock.Load()) }

	for _, tc := range []struct {
		name  string
		spoil func(svid *x509.Certificate)
		code  codes.Code
		msg   string
	}{
		{"expired", func(c *x509.Certificate) { clock.Store(c.NotAfter.Add(time.Second).UnixNano()) }, codes.Unauthenticated, "expired"},
		{"revoked", func(c *x509.Certificate) { revoked.Store(c) }, codes.PermissionDenied, "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Store(time.Now().UnixNano())
			svid := f.ca.Issue(t, "spiffe://example.org/ns/shop/sa/web", time.Hour)
			conn := f.dial(t, f.ca.ClientTLS(svid, controlPlaneID))
			c := f.adsOn(t, conn, "web-1.shop", nil)
			c.send(resource.ClusterType, "", "", nil)
			r := c.mustRecv()
			c.send(resource.ClusterType, r.GetVersionInfo(), r.GetNonce(), nil)
			waitFor(t, func() bool { return f.plane.ADS.conns.len() > 0 }, "the connection to be tracked")
			before := f.plane.ADS.conns.len()

			tc.spoil(svid.Leaf)
			f.plane.ADS.checkStreams(f.plane.ADS.now())
			// A change published now must not reach the stream.
			f.mesh.Publish(buildMesh(t, strings.Replace(meshDocs, "port: 8081}", "port: 8089}", 1)))
			wantEnd(t, c, tc.code, tc.msg, "outbound|8089|cart.shop")
			waitFor(t, func() bool { return f.plane.ADS.conns.len() < before }, "the connection to be closed")

			// The refusal holds for a new stream with the same certificate.
			again := f.adsOn(t, f.dial(t, f.ca.ClientTLS(svid, controlPlaneID)), "web-1.shop", nil)
			again.send(resource.ClusterType, "", "", nil)
			wantEnd(t, again, tc.code, tc.msg)
			f.mesh.Publish(buildMesh(t, meshDocs))
			revoked.Store(nil)
		})
	}
}

func (c *conns) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// deltaClient is a minimal delta ADS client over real gRPC and mTLS.
type deltaClient struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	node   *corev3.Node
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	errs   chan error
	seen   []*discoveryv3.DeltaDiscoveryResponse
}

// delta opens a delta stream with svid for node nodeID; the first request carries the node.
func (f *fixture) delta(t *testing.T, svid *testca.SVID, nodeID string) *deltaClient {
	t.Helper()
	conn := f.dial(t, f.ca.ClientTLS(svid, controlPlaneID))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := &deltaClient{t: t, stream: stream, node: &corev3.Node{Id: nodeID},
		resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 16), errs: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				d.errs <- err
				return
			}
			d.resps <- r
		}
	}()
	return d
}

// send sends req, with the node on the stream's first request.
func (d *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	d.t.Helper()
	if d.node != nil && req.Node == nil {
		req.Node, d.node = d.node, nil
	}
	if err := d.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		d.t.Fatal(err)
	}
}

func (d *deltaClient) mustRecv(t *testing.T) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	select {
	case r := <-d.resps:
		d.seen = append(d.seen, r)
		return r
	case err := <-d.errs:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no delta response")
	}
	return nil
}

// end reads the stream until it ends and returns its status.
func (d *deltaClient) end(t *testing.T) error {
	t.Helper()
	for {
		select {
		case r := <-d.resps:
			d.seen = append(d.seen, r)
		case err := <-d.errs:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("the delta stream did not end")
			return nil
		}
	}
}
