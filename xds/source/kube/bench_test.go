package kube_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/xdsload/simclient"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// The scale of BenchmarkSourceScale: services, endpoints per service (10,000 in all), simulated
// proxies, and upstreams per proxy besides the one every proxy calls.
const (
	scaleNS        = "scale"
	scaleServices  = 1000
	scaleEndpoints = 10
	scaleClients   = 100
	scaleUpstreams = 4
	hotCluster     = "outbound|8080|svc-0.scale"
)

// BenchmarkSourceScale: 1,000 Kubernetes Services with 10,000 EndpointSlice endpoints in a real
// API server. It reports the heap the Kubernetes source holds once synced (source-heap-MiB) and,
// for each op, the time from an EndpointSlice update of a service that all 100 simulated proxies
// (test/xdsload's clients over real gRPC and mTLS) call to the last of their EDS ACKs of the new
// endpoint (ack-median-ms, ack-max-ms over the ops), and the part of it until the source has
// published the new endpoints (source-median-ms: the API server's watch, the informer, the
// source's debounce and rebuild). Run with `make bench`, or:
//
//	go test ./xds/source/kube -run '^$' -bench SourceScale -benchtime 15x
func BenchmarkSourceScale(b *testing.B) {
	env := kubetest.Require(b, &api)
	seedScale(b, env)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	src := startSource(b, env, 0)
	waitFor(b, 2*time.Minute, "the source to hold every endpoint", func() bool {
		return src.Status().Endpoints >= scaleServices*scaleEndpoints
	})
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	st := src.Status()
	b.Logf("source synced: %d documents, %d services, %d endpoints, mesh %s", st.Documents, st.Services, st.Endpoints, st.Version)

	p := servePlane(b, env, src, 0)
	apply(b, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: client, namespace: %s}
spec: {serviceAccounts: [client], ports: [{name: http, port: 9000}]}
`, scaleNS), false)
	waitFor(b, 30*time.Second, "the clients' service in the mesh", func() bool {
		m, _ := src.Current()
		return m.Service(scaleNS, "client") != nil
	})
	slice, err := env.Client.DiscoveryV1().EndpointSlices(scaleNS).Get(context.Background(), "svc-0", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var cur atomic.Pointer[round]
	cur.Store(newRound(slice.Endpoints[len(slice.Endpoints)-1].Addresses[0]))
	startClients(b, p, func(i int, resp *discoveryv3.DiscoveryResponse) {
		if r := cur.Load(); resp.GetTypeUrl() == resource.EndpointType && hasAddress(resp, hotCluster, r.marker) {
			r.reached(i)
		}
	})
	select {
	case <-cur.Load().done:
	case <-time.After(time.Minute):
		b.Fatalf("the simulated proxies did not all get the endpoints of %s", hotCluster)
	}

	var times, sourceTimes []time.Duration
	n := 0
	for b.Loop() {
		n++
		marker := fmt.Sprintf("10.250.%d.%d", n/250, n%250+1)
		r := newRound(marker)
		cur.Store(r)
		slice.Endpoints[len(slice.Endpoints)-1].Addresses = []string{marker}
		_, published := src.Endpoints()
		start := time.Now()
		slice = update(b, env.Client.DiscoveryV1().EndpointSlices(scaleNS).Update, slice)
		select {
		case <-published:
			sourceTimes = append(sourceTimes, time.Since(start))
		case <-time.After(30 * time.Second):
			b.Fatalf("change %d: the source did not publish it", n)
		}
		select {
		case <-r.done:
			times = append(times, r.last.Sub(start))
		case <-time.After(30 * time.Second):
			b.Fatalf("change %d: %d of %d proxies ACKed it", n, scaleClients-int(r.left.Load()), scaleClients)
		}
	}
	b.ReportMetric(heap/(1<<20), "source-heap-MiB")
	b.ReportMetric(ms(median(sourceTimes)), "source-median-ms")
	b.ReportMetric(ms(median(times)), "ack-median-ms")
	b.ReportMetric(ms(slices.Max(times)), "ack-max-ms")
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// round is one EndpointSlice change: done is closed when every proxy has ACKed endpoints of the
// hot cluster that include marker.
type round struct {
	marker string
	seen   [scaleClients]atomic.Bool
	left   atomic.Int64
	last   time.Time
	done   chan struct{}
}

func newRound(marker string) *round {
	r := &round{marker: marker, done: make(chan struct{})}
	r.left.Store(scaleClients)
	return r
}

func (r *round) reached(i int) {
	if r.seen[i].Swap(true) {
		return
	}
	if r.left.Add(-1) == 0 {
		r.last = time.Now()
		close(r.done)
	}
}

// hasAddress reports whether an EDS response has the address among the cluster's endpoints.
func hasAddress(resp *discoveryv3.DiscoveryResponse, cluster, addr string) bool {
	for _, a := range resp.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if a.UnmarshalTo(&cla) != nil || cla.GetClusterName() != cluster {
			continue
		}
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == addr {
					return true
				}
			}
		}
	}
	return false
}

// startClients connects the simulated proxies: workloads of the service "client" registered
// through node metadata (as agents do), each calling svc-0 and a few others.
func startClients(b *testing.B, p *plane, acked func(int, *discoveryv3.DiscoveryResponse)) {
	b.Helper()
	cfg := p.ca.ClientTLS(p.ca.SVID(b, "spiffe://example.org/ns/scale/sa/client"), controlPlaneID)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := range scaleClients {
		upstreams := []any{map[string]any{"service": "svc-0", "localPort": 20000}}
		for k := range scaleUpstreams {
			upstreams = append(upstreams, map[string]any{"service": fmt.Sprintf("svc-%d", 1+(i*scaleUpstreams+k)%(scaleServices-1)), "localPort": 20001 + k})
		}
		meta, err := structpb.NewStruct(map[string]any{bootstrap.MetadataWorkloadKey: map[string]any{
			"metadata": map[string]any{"name": fmt.Sprintf("client-%d", i), "namespace": scaleNS},
			"spec":     map[string]any{"service": "client", "address": "127.0.0.1", "inboundPort": 15000, "appPort": 9000, "upstreams": upstreams},
		}})
		if err != nil {
			b.Fatal(err)
		}
		conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer conn.Close()
			if err := simclient.Run(ctx, conn, &corev3.Node{Id: fmt.Sprintf("client-%d.%s", i, scaleNS), Metadata: meta},
				func(resp *discoveryv3.DiscoveryResponse) { acked(i, resp) }); err != nil {
				b.Error(err)
			}
		})
	}
}

// seedScale creates the namespace (meshed by its label), 1,000 headless Services (the test API
// server's service range is too small for 1,000 cluster IPs) and one EndpointSlice of 10 ready
// endpoints each, with 8 writers, once per API server.
func seedScale(b *testing.B, env *kubetest.Env) {
	b.Helper()
	start := time.Now()
	env.Namespace(b, scaleNS, map[string]string{v1alpha1.LabelInject: v1alpha1.InjectEnabled})
	ctx := context.Background()
	if have, err := env.Client.DiscoveryV1().EndpointSlices(scaleNS).List(ctx, metav1.ListOptions{}); err == nil && len(have.Items) >= scaleServices {
		return // seeded by an earlier run of this process (-count)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for k := range scaleServices {
		g.Go(func() error {
			name := fmt.Sprintf("svc-%d", k)
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scaleNS},
				Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
			}
			if _, err := env.Client.CoreV1().Services(scaleNS).Create(gctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
			var eps []discoveryv1.Endpoint
			for e := range scaleEndpoints {
				eps = append(eps, ep(fmt.Sprintf("10.%d.%d.%d", k/256, k%256, e+1), "", true))
			}
			_, err := env.Client.DiscoveryV1().EndpointSlices(scaleNS).Create(gctx, endpointSlice(scaleNS, name, name, 8080, eps...), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d services and %d endpoints in the API server (%s)", scaleServices, scaleServices*scaleEndpoints, time.Since(start).Round(time.Millisecond))
}
