package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/translate"
)

const td = "example.org"

const meshDocs = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: example.org}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {ports: [{name: http, port: 8081}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec:
  service: web
  inboundPort: 15001
  appPort: 8080
  upstreams: [{service: cart, localPort: 19001}]
`

var controlPlaneID = spiffeid.RequireFromString("spiffe://example.org/ns/portcullis-system/sa/controlplane")

type fixture struct {
	ca       *testca.CA
	addr     string
	mesh     *source.Publisher
	registry *Registry
	ledger   *snapshot.Ledger
	plane    *Plane
}

func buildMesh(t testing.TB, docs string) *model.Mesh {
	t.Helper()
	ds, ps := source.Decode("mesh.yaml", []byte(docs))
	if ps != nil {
		t.Fatal(ps)
	}
	m, ps := source.Build(ds)
	if ps != nil {
		t.Fatal(ps)
	}
	return m
}

// newFixture serves ADS for the mesh of docs over mTLS on loopback, as the control plane does;
// configure changes the plane's configuration.
func newFixture(t *testing.T, docs string, configure ...func(*PlaneConfig)) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{ca: testca.New(t, td), mesh: &source.Publisher{}}
	f.mesh.Publish(buildMesh(t, docs))
	cfg := PlaneConfig{
		Mesh: f.mesh, DataDir: t.TempDir(), DisconnectGrace: 200 * time.Millisecond, Debounce: 5 * time.Millisecond,
		Translate: translate.Options{AuthzAddress: "127.0.0.1:15011", AuthzID: controlPlaneID},
	}
	for _, c := range configure {
		c(&cfg)
	}
	plane, err := NewPlane(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.registry, f.ledger, f.plane = plane.Registry, plane.Ledger, plane
	cpSVID := f.ca.Issue(t, controlPlaneID.String(), time.Hour)
	g := grpc.NewServer(append(GRPCOptions(), grpc.Creds(plane.Credentials(credentials.NewTLS(f.ca.ServerTLS(cpSVID)))))...)
	plane.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	done := make(chan struct{}, 2)
	go func() { _ = g.Serve(ln); done <- struct{}{} }()
	go func() { _ = plane.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		g.Stop()
		for range 2 {
			<-done
		}
	})
	return f
}

// adsClient is a minimal state-of-the-world ADS client over real gRPC and mTLS.
type adsClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	resps  chan *discoveryv3.DiscoveryResponse
	errs   chan error
}

func (f *fixture) dial(t *testing.T, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *fixture) ads(t *testing.T, svidID, nodeID string, meta *structpb.Struct) *adsClient {
	t.Helper()
	var svid *testca.SVID
	if svidID != "" {
		svid = f.ca.Issue(t, svidID, time.Hour)
	}
	return f.adsOn(t, f.dial(t, f.ca.ClientTLS(svid, controlPlaneID)), nodeID, meta)
}

// adsOn opens a state-of-the-world stream on conn.
func (f *fixture) adsOn(t *testing.T, conn *grpc.ClientConn, nodeID string, meta *structpb.Struct) *adsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, node: &corev3.Node{Id: nodeID, Metadata: meta},
		resps: make(chan *discoveryv3.DiscoveryResponse, 16), errs: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errs <- err
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *adsClient) send(typeURL, version, nonce string, nack error) {
	c.t.Helper()
	c.sendFor(typeURL, nil, version, nonce, nack)
}

// sendFor requests (or ACKs, or NACKs) named resources of a type, as Envoy does for RDS, ECDS
// and EDS.
func (c *adsClient) sendFor(typeURL string, names []string, version, nonce string, nack error) {
	c.t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typeURL, ResourceNames: names, VersionInfo: version, ResponseNonce: nonce}
	if nack != nil {
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	// io.EOF means the server already ended the stream; its status comes from Recv.
	if err := c.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		c.t.Fatal(err)
	}
}

func (c *adsClient) recv(timeout time.Duration) (*discoveryv3.DiscoveryResponse, error) {
	select {
	case r := <-c.resps:
		return r, nil
	case err := <-c.errs:
		return nil, err
	case <-time.After(timeout):
		return nil, nil
	}
}

func (c *adsClient) mustRecv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	r, err := c.recv(5 * time.Second)
	if err != nil || r == nil {
		c.t.Fatalf("no response: %v", err)
	}
	return r
}

func names(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		switch r.GetTypeUrl() {
		case resource.ClusterType:
			var c clusterv3.Cluster
			if err := a.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			out = append(out, c.GetName())
		case resource.EndpointType:
			var e endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e.GetClusterName())
		default:
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			n, ok := m.(interface{ GetName() string })
			if !ok {
				t.Fatalf("%s has no name", a.GetTypeUrl())
			}
			out = append(out, n.GetName())
		}
	}
	return out
}

func TestADSServesProvenIdentityAndRecordsACK(t *testing.T) {
	f := newFixture(t, meshDocs)
	c := f.ads(t, "spiffe://example.org/ns/shop/sa/web", "web-1.shop", nil)
	c.send(resource.ClusterType, "", "", nil)
	r := c.mustRecv()
	got := names(t, r)
	slices.Sort(got)
	if strings.Join(got, ",") != "inbound|8080|app,outbound|8081|cart.shop,portcullis-authz" {
		t.Errorf("clusters = %s", got)
	}
	c.send(resource.ClusterType, r.GetVersionInfo(), r.GetNonce(), nil)
	waitFor(t, func() bool {
		st := f.ledger.Status()
		return len(st) == 1 && st[0].Types[resource.ClusterType].Acked == r.GetVersionInfo() && st[0].Connected
	}, "ledger to record the ACK")
	if regs, _ := f.registry.Current(); len(regs) != 1 || !regs[0].Connected || regs[0].Identity.String() != "spiffe://example.org/ns/shop/sa/web" {
		t.Errorf("registry = %+v", regs)
	}
}

func TestADSRefusesWrongOrMissingIdentity(t *testing.T) {
	f := newFixture(t, meshDocs)
	for name, tc := range map[string]struct {
		svid string
		code codes.Code
		msg  string
	}{
		"another workload's certificate": {"spiffe://example.org/ns/shop/sa/cart", codes.PermissionDenied, "certificate proves spiffe://example.org/ns/shop/sa/cart"},
		"no client certificate":          {"", codes.Unauthenticated, "client certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			c := f.ads(t, tc.svid, "web-1.shop", nil)
			c.send(resource.ClusterType, "", "", nil)
			r, err := c.recv(5 * time.Second)
			if r != nil || grpcstatus.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got response %v, err %v; want %s containing %q", r, err, tc.code, tc.msg)
			}
		})
	}
	if regs, _ := f.registry.Current(); len(regs) != 0 {
		t.Errorf("refused proxies registered: %+v", regs)
	}
}

func TestADSNeverResendsNackedVersion(t *testing.T) {
	f := newFixture(t, meshDocs)
	c := f.ads(t, "spiffe://example.org/ns/shop/sa/web", "web-1.shop", nil)
	c.send(resource.ClusterType, "", "", nil)
	first := c.mustRecv()
	c.send(resource.ClusterType, "", first.GetNonce(), errString("cluster inbound|8080|app: refused for the test"))
	// The stock cache would answer at once with the same version, again and again.
	if r, err := c.recv(500 * time.Millisecond); r != nil || err != nil {
		t.Fatalf("NACKed version resent: %v %v", r.GetVersionInfo(), err)
	}
	st := f.ledger.Status()[0].Types[resource.ClusterType]
	if st.Nacked != first.GetVersionInfo() || !strings.Contains(st.NackError, "refused for the test") {
		t.Fatalf("ledger = %+v", st)
	}
	// A new version is sent.
	f.mesh.Publish(buildMesh(t, strings.Replace(meshDocs, "port: 8081}", "port: 8082}", 1)))
	next := c.mustRecv()
	if next.GetVersionInfo() == first.GetVersionInfo() {
		t.Fatal("same version after a change")
	}
	c.send(resource.ClusterType, next.GetVersionInfo(), next.GetNonce(), nil)
	waitFor(t, func() bool {
		st := f.ledger.Status()[0].Types[resource.ClusterType]
		return st.Acked == next.GetVersionInfo() && st.Nacked == ""
	}, "the ACK of the new version to clear the NACK")
}

func TestEndpointsFollowConnectedProxies(t *testing.T) {
	f := newFixture(t, meshDocs)
	web := f.ads(t, "spiffe://example.org/ns/shop/sa/web", "web-1.shop", nil)
	web.send(resource.ClusterType, "", "", nil)
	cds := web.mustRecv()
	web.send(resource.ClusterType, cds.GetVersionInfo(), cds.GetNonce(), nil)
	web.send(resource.EndpointType, "", "", nil)
	eds := web.mustRecv()
	if n := countEndpoints(t, eds); n != 0 {
		t.Fatalf("cart has %d endpoints before any cart proxy connected", n)
	}
	web.send(resource.EndpointType, eds.GetVersionInfo(), eds.GetNonce(), nil)

	// A cart instance registers itself through node metadata (no Workload document).
	meta, err := structpb.NewStruct(map[string]any{bootstrap.MetadataWorkloadKey: map[string]any{
		"metadata": map[string]any{"name": "cart-1", "namespace": "shop"},
		"spec":     map[string]any{"service": "cart", "address": "127.0.0.9", "inboundPort": 15002, "appPort": 8081},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cart := f.ads(t, "spiffe://example.org/ns/shop/sa/cart", "cart-1.shop", meta)
	cart.send(resource.ClusterType, "", "", nil)
	cart.mustRecv()
	eds = web.mustRecv()
	if n := countEndpoints(t, eds); n != 1 {
		t.Fatalf("cart has %d endpoints after its proxy connected, want 1", n)
	}
	web.send(resource.EndpointType, eds.GetVersionInfo(), eds.GetNonce(), nil)

	// It disconnects: after the grace period its endpoint goes.
	if err := cart.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	cart.t.Cleanup(func() {})
	start := time.Now()
	eds = web.mustRecv()
	if n := countEndpoints(t, eds); n != 0 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("%d endpoints %s after disconnect", n, time.Since(start))
	}
}

func countEndpoints(t *testing.T, r *discoveryv3.DiscoveryResponse) int {
	t.Helper()
	n := 0
	for _, a := range r.GetResources() {
		var e endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&e); err != nil {
			t.Fatal(err)
		}
		for _, l := range e.GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
	}
	return n
}

type errString string

func (e errString) Error() string { return string(e) }

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
