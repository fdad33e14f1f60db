package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/test/meshgen"
	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/server"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/translate"
)

func main() {
	role := flag.String("role", "controlplane", "controlplane (default) or clients (the child process)")
	clients := flag.Int("clients", 1000, "simulated proxies")
	services := flag.Int("services", 500, "services in the mesh")
	upstreams := flag.Int("upstreams", 3, "upstream services per workload")
	rounds := flag.Int("rounds", 7, "document changes to time")
	addr := flag.String("addr", "", "ADS address (clients role)")
	certDir := flag.String("certs", "", "directory of client SVIDs (clients role)")
	cpuProfile := flag.String("cpuprofile", "", "write the control plane's CPU profile of the timed rounds here")
	flag.Parse()
	var err error
	if *role == "clients" {
		err = runClients(*addr, *certDir, *clients)
	} else {
		err = runControlPlane(*clients, *services, *upstreams, *rounds, *cpuProfile)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdsload:", err)
		os.Exit(1)
	}
}

const trustDomain = "load.test"

func runControlPlane(nClients, nServices, nUpstreams, rounds int, cpuProfile string) error {
	work, err := os.MkdirTemp("", "xdsload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	meshDir, certDir := filepath.Join(work, "mesh"), filepath.Join(work, "certs")
	if err := os.MkdirAll(meshDir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	spec := meshgen.Spec{TrustDomain: trustDomain, Services: nServices, Workloads: nClients, Upstreams: nUpstreams, AuthzTimeoutMs: 250}
	if err := writeMesh(meshDir, spec); err != nil {
		return err
	}
	tb := &tb{}
	ca := testca.New(tb, trustDomain)
	for i := range nClients {
		svid := ca.Issue(tb, fmt.Sprintf("spiffe://%s/ns/load/sa/%s", trustDomain, spec.ServiceAccount(i)), 24*time.Hour)
		pemData := append(svid.CertPEM, svid.KeyPEM...)
		if err := os.WriteFile(filepath.Join(certDir, fmt.Sprintf("w-%d.pem", i)), pemData, 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(certDir, "ca.pem"), ca.CertPEM, 0o600); err != nil {
		return err
	}
	if tb.err != nil {
		return tb.err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	src, err := source.NewDir(meshDir, source.DirOptions{Logger: log})
	if err != nil {
		return err
	}
	if err := src.Load(); err != nil {
		return err
	}
	cpID := fmt.Sprintf("spiffe://%s/ns/portcullis-system/sa/controlplane", trustDomain)
	plane, err := server.NewPlane(ctx, server.PlaneConfig{
		Mesh: src, Logger: log,
		Translate: translate.Options{AuthzAddress: "127.0.0.1:15011", AuthzID: mustID(cpID)},
	})
	if err != nil {
		return err
	}
	g := grpc.NewServer(append(server.GRPCOptions(), grpc.Creds(credentials.NewTLS(ca.ServerTLS(ca.Issue(tb, cpID, 24*time.Hour)))))...)
	plane.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	go func() { _ = src.Run(ctx) }()
	go func() { _ = plane.Run(ctx) }()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, "-role", "clients", "-addr", ln.Addr().String(), "-certs", certDir, "-clients", strconv.Itoa(nClients))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	in, err := child.StdinPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	lines := bufio.NewScanner(out)
	expect := func(prefix string) (string, error) {
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return rest, nil
			}
		}
		return "", fmt.Errorf("clients exited before %q", prefix)
	}
	start := time.Now()
	if _, err := expect("READY"); err != nil {
		return err
	}
	fmt.Printf("clients=%d services=%d upstreams/workload=%d: all connected and ACKed in %s\n",
		nClients, nServices, nUpstreams, time.Since(start).Round(time.Millisecond))
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var times []time.Duration
	for r := range rounds {
		runtime.GC()
		// Change the authorization timeout: every proxy's ext_authz configuration (ECDS) changes.
		t0 := time.Now()
		spec.AuthzTimeoutMs = 251 + r
		if err := writeMesh(meshDir, spec); err != nil {
			return err
		}
		if _, err := fmt.Fprintln(in, "ROUND"); err != nil {
			return err
		}
		done, err := expect("CONVERGED ")
		if err != nil {
			return err
		}
		ns, err := strconv.ParseInt(done, 10, 64)
		if err != nil {
			return err
		}
		d := time.Unix(0, ns).Sub(t0)
		times = append(times, d)
		fmt.Printf("round %d: all %d proxies ACKed the change %s after the file was written\n", r+1, nClients, d.Round(time.Millisecond))
	}
	slices.Sort(times)
	fmt.Printf("convergence: median %s, p99 (max of %d) %s; control-plane RSS %s\n",
		times[len(times)/2].Round(time.Millisecond), len(times), times[len(times)-1].Round(time.Millisecond), rss())
	_, err = io.WriteString(in, "STOP\n")
	return err
}

// writeMesh writes the mesh's files, each replaced atomically. Only changed files are rewritten
// (as an editor would), so a round's change is one small file.
func writeMesh(dir string, spec meshgen.Spec) error {
	for name, content := range spec.Files() {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && string(old) == content {
			continue
		}
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

func rss() string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func loadClientTLS(certDir string, i int, caPool *x509.CertPool, serverID string) (*tls.Config, error) {
	data, err := os.ReadFile(filepath.Join(certDir, fmt.Sprintf("w-%d.pem", i)))
	if err != nil {
		return nil, err
	}
	var certPEM, keyPEM []byte
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certPEM = pem.EncodeToMemory(blk)
		} else {
			keyPEM = pem.EncodeToMemory(blk)
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		RootCAs:            caPool,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // the URI SAN is checked below; SVIDs have no DNS names
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != serverID {
				return fmt.Errorf("server is not %s", serverID)
			}
			return nil
		},
	}, nil
}

func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
