package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/test/meshgen"
	"github.com/portcullis/portcullis/test/xdsload/simclient"
)

// runClients opens n ADS streams that behave like Envoy (simclient). It prints READY once every
// client has ACKed its ext_authz filter configuration (ECDS, the last type a proxy is sent), then
// for each ROUND on stdin, CONVERGED <unix ns> when every client has ACKed one more update of it.
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
		go func() {
			errs <- simclient.Run(ctx, conn, &corev3.Node{Id: meshgen.NodeID(i)}, func(resp *discoveryv3.DiscoveryResponse) {
				if resp.GetTypeUrl() == resource.ExtensionConfigType {
					acks <- i
				}
			})
		}()
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
