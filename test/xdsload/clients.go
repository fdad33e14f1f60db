package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/test/meshgen"
)

// runClients opens n ADS streams that behave like Envoy: clusters first, then the endpoints of
// EDS clusters, then listeners, ACKing everything. It prints READY once every client has ACKed
// listeners, then for each ROUND on stdin, CONVERGED <unix ns> when every client has ACKed one
// more listener update.
func runClients(addr, certDir string, n int) error {
	caPEM, err := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serverID := fmt.Sprintf("spiffe://%s/ns/portcullis-system/sa/controlplane", trustDomain)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acks := make(chan int, n)
	errs := make(chan error, n)
	for i := range n {
		cfg, err := loadClientTLS(certDir, i, pool, serverID)
		if err != nil {
			return err
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		go func() { errs <- runClient(ctx, conn, meshgen.NodeID(i), i, acks) }()
	}
	counts := make([]int, n)
	target := 1
	reached := 0 // clients with counts >= target
	rounds := make(chan struct{})
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if in.Text() == "STOP" {
				break
			}
			rounds <- struct{}{}
		}
		close(rounds)
	}()
	ready := false
	for {
		select {
		case i := <-acks:
			counts[i]++
			if counts[i] == target {
				reached++
			}
			if reached == n {
				if !ready {
					ready = true
					fmt.Println("READY")
				} else {
					fmt.Printf("CONVERGED %d\n", time.Now().UnixNano())
				}
				reached = -1 // until the next round starts
			}
		case _, ok := <-rounds:
			if !ok {
				return nil
			}
			target++
			reached = 0
			for _, c := range counts {
				if c >= target {
					reached++
				}
			}
		case err := <-errs:
			return err
		}
	}
}

func runClient(ctx context.Context, conn *grpc.ClientConn, node string, index int, acks chan<- int) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("client %s: %w", node, err)
	}
	send := func(req *discoveryv3.DiscoveryRequest) error {
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("client %s: %w", node, err)
		}
		return nil
	}
	// The node goes on the first request only, as Envoy does with set_node_on_first_message_only.
	if err := send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}); err != nil {
		return err
	}
	var edsNames []string
	listenersAsked := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("client %s: %w", node, err)
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			names, err := edsClusters(resp)
			if err != nil {
				return fmt.Errorf("client %s: %w", node, err)
			}
			if err := send(ack); err != nil {
				return err
			}
			if edsNames == nil {
				edsNames = names
				if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names}); err != nil {
					return err
				}
			}
			if !listenersAsked {
				listenersAsked = true
				if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType}); err != nil {
					return err
				}
			}
		case resource.EndpointType:
			ack.ResourceNames = edsNames
			if err := send(ack); err != nil {
				return err
			}
		case resource.ListenerType:
			if err := send(ack); err != nil {
				return err
			}
			acks <- index
		}
	}
}

func edsClusters(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	names := []string{}
	for _, a := range resp.GetResources() {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			return nil, err
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			names = append(names, c.GetName())
		}
	}
	return names, nil
}
