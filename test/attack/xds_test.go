package attack

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/test/procstat"
	"github.com/portcullis/portcullis/xds/bootstrap"
)

// stream is one ADS stream, state of the world or delta, as an attacker drives it.
type stream struct {
	send  func(node *corev3.Node, typeURL, version, nonce string, names []string) error
	resps chan [][]byte // each response's resources, serialized
	last  chan struct{ version, nonce string }
	errs  chan error
}

// openADS opens an ADS stream on conn; delta picks the protocol.
func openADS(ctx context.Context, conn *grpc.ClientConn, delta bool) (*stream, error) {
	c := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	s := &stream{resps: make(chan [][]byte, 64), last: make(chan struct{ version, nonce string }, 64), errs: make(chan error, 1)}
	if delta {
		st, err := c.DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		s.send = func(node *corev3.Node, typeURL, _, nonce string, names []string) error {
			return st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResponseNonce: nonce, ResourceNamesSubscribe: names})
		}
		go s.pump(func() ([][]byte, string, string, error) {
			r, err := st.Recv()
			var res [][]byte
			for _, x := range r.GetResources() {
				res = append(res, x.GetResource().GetValue())
			}
			return res, "", r.GetNonce(), err
		})
		return s, nil
	}
	st, err := c.StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	s.send = func(node *corev3.Node, typeURL, version, nonce string, names []string) error {
		return st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names})
	}
	go s.pump(func() ([][]byte, string, string, error) {
		r, err := st.Recv()
		var res [][]byte
		for _, x := range r.GetResources() {
			res = append(res, x.GetValue())
		}
		return res, r.GetVersionInfo(), r.GetNonce(), err
	})
	return s, nil
}

// pump hands each response's resources, version and nonce to the test until the stream ends,
// then its error.
func (s *stream) pump(recv func() (resources [][]byte, version, nonce string, err error)) {
	for {
		res, version, nonce, err := recv()
		if err != nil {
			s.errs <- err
			return
		}
		s.resps <- res
		s.last <- struct{ version, nonce string }{version, nonce}
	}
}

// first waits for the first response; it returns its resources and version and nonce.
func (s *stream) first() ([][]byte, string, string, error) {
	select {
	case res := <-s.resps:
		l := <-s.last
		return res, l.version, l.nonce, nil
	case err := <-s.errs:
		return nil, "", "", err
	case <-time.After(10 * time.Second):
		return nil, "", "", errors.New("no response")
	}
}

// end waits for the stream to end, counting responses with resources not in own.
func (s *stream) end(own [][]byte, wait time.Duration) (foreign int, err error) {
	deadline := time.After(wait)
	for {
		select {
		case res := <-s.resps:
			<-s.last
			for _, r := range res {
				if !containsBytes(own, r) {
					foreign++
				}
			}
		case err := <-s.errs:
			return foreign, err
		case <-deadline:
			return foreign, nil
		}
	}
}

func containsBytes(list [][]byte, b []byte) bool {
	for _, x := range list {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}

// registers is a node that registers itself as a workload through metadata, as an agent does.
func registers(name, service string, appPort int) *corev3.Node {
	meta, _ := structpb.NewStruct(map[string]any{bootstrap.MetadataWorkloadKey: map[string]any{
		"metadata": map[string]any{"name": name, "namespace": "demo"},
		"spec":     map[string]any{"service": service, "inboundPort": 40000, "appPort": appPort},
	}})
	return &corev3.Node{Id: name + ".demo", Metadata: meta}
}

// xdsConn is a connection to ADS with src's SVID.
func (e *env) xdsConn(src *workloadapi.X509Source) *grpc.ClientConn {
	return e.dial(e.c.XDSAddr, credentials.NewTLS(tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(controlPlID))))
}

// adsAttacks: go-control-plane takes the node of every request on a stream; the server checked
// only the first, so an ACK naming another node was answered with that node's configuration,
// and every node id named stayed in memory.
func adsAttacks(e *env, r *report) {
	for _, delta := range []bool{false, true} {
		proto := "state of the world"
		if delta {
			proto = "delta"
		}
		r.check("xds", "switch the node to the backend's after the first request ("+proto+")", "PERMISSION_DENIED; none of the backend's resources", func() (string, bool) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := openADS(ctx, e.xdsConn(e.frontend), delta)
			if err != nil {
				return err.Error(), false
			}
			node := registers("frontend-x", "frontend", e.frontPort)
			if err := s.send(node, resource.ClusterType, "", "", nil); err != nil {
				return err.Error(), false
			}
			own, version, nonce, err := s.first()
			if err != nil {
				return "no configuration for the attacker's own node: " + err.Error(), false
			}
			if err := s.send(&corev3.Node{Id: "backend-1.demo"}, resource.ClusterType, version, nonce, nil); err != nil {
				return err.Error(), false
			}
			foreign, end := s.end(own, 10*time.Second)
			return fmt.Sprintf("%v; %d foreign resources", end, foreign), grpcstatus.Code(end) == codes.PermissionDenied && foreign == 0
		})
	}
	r.check("xds", "300 streams, each registering a node then naming a new node id", "each refused; the control plane forgets every node they registered", func() (string, bool) {
		rss0, _ := procstat.RSSMiB(e.c.CP.Pid())
		conn := e.xdsConn(e.frontend)
		var mu sync.Mutex
		refused := 0
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() {
				for i := w; i < 300; i += 6 {
					ctx, cancel := context.WithCancel(context.Background())
					s, err := openADS(ctx, conn, i%2 == 1)
					if err == nil && s.send(registers(fmt.Sprintf("frontend-c%d", i), "frontend", e.frontPort), resource.ClusterType, "", "", nil) == nil {
						if own, v, n, err := s.first(); err == nil && s.send(&corev3.Node{Id: fmt.Sprintf("ghost-%d.demo", i)}, resource.ClusterType, v, n, nil) == nil {
							if foreign, end := s.end(own, 10*time.Second); grpcstatus.Code(end) == codes.PermissionDenied && foreign == 0 {
								mu.Lock()
								refused++
								mu.Unlock()
							}
						}
					}
					cancel()
				}
			})
		}
		wg.Wait()
		rss1, _ := procstat.RSSMiB(e.c.CP.Pid())
		// Registrations expire 5s after their stream.
		left := e.proxies("frontend-c", "ghost-")
		for deadline := time.Now().Add(20 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = e.proxies("frontend-c", "ghost-") {
			time.Sleep(250 * time.Millisecond)
		}
		rss2, _ := procstat.RSSMiB(e.c.CP.Pid())
		return fmt.Sprintf("%d/300 refused; %d of their nodes still listed; control plane RSS %.0f → %.0f → %.0f MiB", refused, len(left), rss0, rss1, rss2),
			refused == 300 && len(left) == 0
	})
	r.check("xds", "a type the server does not serve", "INVALID_ARGUMENT", func() (string, bool) {
		return e.refusedRequest(func(s *stream) error {
			return s.send(registers("frontend-x", "frontend", e.frontPort), "type.googleapis.com/made.up.Type", "", "", nil)
		}, codes.InvalidArgument)
	})
	r.check("xds", "a 2 MiB request", "RESOURCE_EXHAUSTED", func() (string, bool) {
		return e.refusedRequest(func(s *stream) error {
			return s.send(registers("frontend-x", "frontend", e.frontPort), resource.EndpointType, "", "", []string{strings.Repeat("n", 2<<20)})
		}, codes.ResourceExhausted)
	})
	r.check("xds", "a stream without a client certificate", "refused", func() (string, bool) {
		conn := e.dial(e.c.XDSAddr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // the attacker does not care who answers
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := openADS(ctx, conn, false)
		if err != nil {
			return err.Error(), true
		}
		if err := s.send(registers("frontend-x", "frontend", e.frontPort), resource.ClusterType, "", "", nil); err != nil && !errors.Is(err, io.EOF) {
			return err.Error(), true
		}
		_, _, _, err = s.first()
		return fmt.Sprint(err), err != nil && grpcstatus.Code(err) == codes.Unauthenticated
	})
}

// refusedRequest sends one request on a new stream and checks the stream ends with code.
func (e *env) refusedRequest(send func(*stream) error, code codes.Code) (string, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := openADS(ctx, e.xdsConn(e.frontend), false)
	if err != nil {
		return err.Error(), false
	}
	if err := send(s); err != nil && !errors.Is(err, io.EOF) {
		return err.Error(), false
	}
	_, end := s.end(nil, 10*time.Second)
	return fmt.Sprint(end), grpcstatus.Code(end) == code
}

// proxies lists the nodes the control plane shows on /debug/proxies whose id starts with one of
// prefixes ("?" when it cannot tell).
func (e *env) proxies(prefixes ...string) []string {
	resp, err := http.Get("http://" + e.c.CPAdmin + "/debug/proxies")
	if err != nil {
		return []string{"?"}
	}
	defer resp.Body.Close()
	var list []struct {
		Node string `json:"node"`
	}
	if json.NewDecoder(resp.Body).Decode(&list) != nil {
		return []string{"?"}
	}
	var out []string
	for _, p := range list {
		for _, prefix := range prefixes {
			if strings.HasPrefix(p.Node, prefix) {
				out = append(out, p.Node)
			}
		}
	}
	return out
}

// revocationAttacks: a revoked workload kept receiving configuration on its open stream and kept
// calling ext_authz.
func revocationAttacks(e *env, r *report) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := openADS(ctx, e.xdsConn(e.mallory), false)
	var own [][]byte
	if err == nil {
		if err = s.send(registers("mallory-1", "mallory", e.malloryPort), resource.ClusterType, "", "", nil); err == nil {
			own, _, _, err = s.first()
		}
	}
	authz := e.authzClient(e.mallory)
	_, checkErr := checkStatus(authz, checkRequest(malloryID.String(), "GET", "/api/x"))
	e.c.Portcullis("ca", "revoke", "--data-dir", e.c.DataDir, "--spiffe-id", malloryID.String(), "--note", "attack suite")
	revokedAt := time.Now()

	r.check("revoked", "an open ADS stream of a workload revoked by SPIFFE ID", "ended with PERMISSION_DENIED within seconds; nothing more sent", func() (string, bool) {
		if err != nil || checkErr != nil {
			return fmt.Sprintf("setup: stream %v, check %v", err, checkErr), false
		}
		foreign, end := s.end(own, 15*time.Second)
		return fmt.Sprintf("%v after %s; %d new resources", end, time.Since(revokedAt).Round(100*time.Millisecond), foreign),
			grpcstatus.Code(end) == codes.PermissionDenied && strings.Contains(fmt.Sprint(end), "revoked") && foreign == 0
	})
	r.check("revoked", "a new ADS stream with the revoked SVID", "PERMISSION_DENIED", func() (string, bool) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := openADS(ctx, e.xdsConn(e.mallory), false)
		if err != nil {
			return err.Error(), false
		}
		_ = s.send(registers("mallory-1", "mallory", e.malloryPort), resource.ClusterType, "", "", nil)
		_, end := s.end(nil, 10*time.Second)
		return fmt.Sprint(end), grpcstatus.Code(end) == codes.PermissionDenied
	})
	r.check("revoked", "Check from the revoked workload, on its open connection", "PERMISSION_DENIED, no decision", func() (string, bool) {
		// The CA rereads its revocation list every 2s.
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if _, err = checkStatus(authz, checkRequest(malloryID.String(), "GET", "/api/x")); grpcstatus.Code(err) == codes.PermissionDenied {
				break
			}
		}
		return fmt.Sprint(err), grpcstatus.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "revoked")
	})
}
