package certsvc_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/identity/certpb"
	"github.com/portcullis/portcullis/identity/internal/cptest"
)

// benchClients are separate HTTP/2 connections, as separate agents would have.
const benchClients = 8

// BenchmarkSignGRPC measures renewals through the gRPC service over loopback mTLS, client and
// server on the same machine: CSR check, revocation check, signing, response. It reports
// SVIDs per second.
func BenchmarkSignGRPC(b *testing.B) {
	cp := cptest.Start(b, cptest.Options{Quiet: true})
	svid := join(b, cp, web)
	clients := make([]certpb.CertificateServiceClient, benchClients)
	for i := range clients {
		clients[i] = client(b, cp, svid)
	}
	csr := csrFor(b, newKey(b), nil, web) // the same key may be certified many times
	runParallel(b, clients, func(_ int) *certpb.SignRequest { return &certpb.SignRequest{Csr: csr} })
}

// BenchmarkJoinGRPC measures first contacts: each request redeems its own join token, whose
// use is persisted (group-committed) before the SVID is returned.
func BenchmarkJoinGRPC(b *testing.B) {
	cp := cptest.Start(b, cptest.Options{Quiet: true})
	clients := make([]certpb.CertificateServiceClient, benchClients)
	for i := range clients {
		clients[i] = client(b, cp, nil)
	}
	csr := csrFor(b, newKey(b), nil, web)
	tokens := make([]string, b.N)
	for i := range tokens {
		tokens[i] = cp.Token(b, web, time.Hour)
	}
	runParallel(b, clients, func(i int) *certpb.SignRequest { return &certpb.SignRequest{Csr: csr, JoinToken: tokens[i]} })
}

func runParallel(b *testing.B, clients []certpb.CertificateServiceClient, req func(i int) *certpb.SignRequest) {
	var next, conn atomic.Int64
	b.SetParallelism(16) // 16 × GOMAXPROCS requests in flight
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		c := clients[int(conn.Add(1))%len(clients)]
		for pb.Next() {
			if _, err := c.Sign(context.Background(), req(int(next.Add(1)-1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	wall, cpu := time.Since(start), cpuTime(b)-cpu0
	b.ReportMetric(float64(b.N)/wall.Seconds(), "svids/s")
	// The machine is shared: CPU time per SVID (client and server together, both in this
	// process) gives the capacity of two dedicated cores independently of other load.
	perOp := cpu / time.Duration(b.N)
	b.ReportMetric(float64(perOp.Microseconds()), "cpu-µs/svid")
	b.ReportMetric(2*float64(time.Second)/float64(perOp), "svids/s@2cpu")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
