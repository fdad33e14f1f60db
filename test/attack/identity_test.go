package attack

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/certpb"
	"github.com/portcullis/portcullis/test/proctest"
)

// csr is a PKCS#10 request for id with key, changed by mutate.
func csr(key crypto.Signer, id spiffeid.ID, mutate func(*x509.CertificateRequest)) ([]byte, error) {
	req := &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}
	if mutate != nil {
		mutate(req)
	}
	return x509.CreateCertificateRequest(rand.Reader, req, key)
}

// certificateAttacks: the frontend renews over mTLS with its SVID, asking for more than its own
// identity.
func certificateAttacks(e *env, r *report) {
	signer := certpb.NewCertificateServiceClient(e.xdsConn(e.frontend))
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // the weak key is the attack
	caBits, _ := asn1.Marshal(struct{ IsCA bool }{true})
	for _, tc := range []struct {
		name   string
		key    crypto.Signer
		id     spiffeid.ID
		mutate func(*x509.CertificateRequest)
	}{
		{"a CSR for the backend's SPIFFE ID", p256, backendID, nil},
		{"a CSR with an extra DNS SAN", p256, frontendID, func(r *x509.CertificateRequest) { r.DNSNames = []string{"backend.demo"} }},
		{"a CSR with a second URI SAN", p256, frontendID, func(r *x509.CertificateRequest) { r.URIs = append(r.URIs, backendID.URL()) }},
		{"a CSR asking for CA:true", p256, frontendID, func(r *x509.CertificateRequest) {
			r.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caBits}}
		}},
		{"a CSR with an RSA-1024 key", rsa1024, frontendID, nil},
		{"a CSR with a P-384 key", p384, frontendID, nil},
	} {
		r.check("csr", tc.name, "refused, or an SVID for the frontend alone that is no CA", func() (string, bool) {
			der, err := csr(tc.key, tc.id, tc.mutate)
			if err != nil {
				return err.Error(), false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := signer.Sign(ctx, &certpb.SignRequest{Csr: der})
			if err != nil {
				return grpcstatus.Code(err).String() + ": " + grpcstatus.Convert(err).Message(), true
			}
			leaf, err := x509.ParseCertificate(resp.GetCertChain()[0])
			if err != nil {
				return err.Error(), false
			}
			ok := !leaf.IsCA && leaf.KeyUsage&x509.KeyUsageCertSign == 0 && len(leaf.DNSNames) == 0 && len(leaf.URIs) == 1 && leaf.URIs[0].String() == frontendID.String()
			return fmt.Sprintf("issued %v (CA %v, DNS %v)", leaf.URIs, leaf.IsCA, leaf.DNSNames), ok
		})
	}
}

// cp2 is a second control plane with SVIDs that live 4s, for the attacks that need an SVID to
// expire or the control plane to restart.
type cp2 struct {
	e                    *env
	dir, data, addr, bin string
	proc                 *proctest.Process
}

func (e *env) startCP2() *cp2 {
	c := &cp2{e: e, dir: filepath.Join(e.c.Work, "cp2"), bin: e.c.Bin}
	c.data = filepath.Join(c.dir, "data")
	c.addr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(e.t))
	config := filepath.Join(c.dir, "mesh")
	if err := os.MkdirAll(config, 0o700); err != nil {
		e.t.Fatal(err)
	}
	for name, doc := range map[string]string{"mesh.yaml": meshDoc, "services.yaml": servicesDoc(e.frontPort, e.frontPort+1, e.malloryPort)} {
		if err := os.WriteFile(filepath.Join(config, name), []byte(doc), 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
	c.start()
	return c
}

func (c *cp2) start() {
	c.proc = proctest.Start(c.e.t, "controlplane-2", c.bin, "controlplane", "--log-format", "json", "--config", filepath.Join(c.dir, "mesh"),
		"--data-dir", c.data, "--admin-addr", "127.0.0.1:0", "--xds-addr", c.addr, "--authz-addr", "127.0.0.1:0", "--svid-ttl", "4s")
	c.proc.Wait(c.e.t, "control plane serving", "xds_addr")
}

// token creates a join token for demo/mallory.
func (c *cp2) token() string {
	file := filepath.Join(c.dir, fmt.Sprintf("token-%d", time.Now().UnixNano()))
	c.e.c.Portcullis("token", "create", "--data-dir", c.data, "--namespace", "demo", "--service", "mallory", "--out", file)
	b, err := os.ReadFile(file)
	if err != nil {
		c.e.t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	c.e.secrets = append(c.e.secrets, tok[strings.LastIndex(tok, ".")+1:])
	return tok
}

// join signs a first SVID with a join token, as an agent does (without checking the server: the
// attacker does not care who answers).
func join(addr, token string) (tls.Certificate, *x509.Certificate, error) {
	tok, err := attest.Parse(token)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	der, err := csr(key, tok.SPIFFEID, nil)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	conn, err := grpcClient(addr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // see above
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := certpb.NewCertificateServiceClient(conn).Sign(ctx, &certpb.SignRequest{Csr: der, JoinToken: token})
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(resp.GetCertChain()[0])
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: resp.GetCertChain(), PrivateKey: key, Leaf: leaf}, leaf, nil
}

// shortLivedAttacks: join tokens used at once or again after a restart, and an ADS stream that
// outlives its SVID.
func shortLivedAttacks(e *env, r *report) {
	c := e.startCP2()
	used := c.token()
	r.check("token", "one join token used 30 times at once", "exactly one SVID", func() (string, bool) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, reasons := 0, map[string]int{}
		for range 30 {
			wg.Go(func() {
				_, _, err := join(c.addr, used)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok++
				} else {
					reasons[grpcstatus.Convert(err).Message()]++
				}
			})
		}
		wg.Wait()
		return fmt.Sprintf("%d SVIDs; refusals %v", ok, reasons), ok == 1
	})
	r.check("xds", "an ADS stream that outlives its SVID (TTL 4s)", "ended with UNAUTHENTICATED within 2s of expiry; nothing sent after", func() (string, bool) {
		cert, leaf, err := join(c.addr, c.token())
		if err != nil {
			return err.Error(), false
		}
		conn, err := grpcClient(c.addr, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})) //nolint:gosec // see join
		if err != nil {
			return err.Error(), false
		}
		defer conn.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := openADS(ctx, conn, false)
		if err != nil {
			return err.Error(), false
		}
		if err := s.send(registers("mallory-e", "mallory", e.malloryPort), resource.ClusterType, "", "", nil); err != nil {
			return err.Error(), false
		}
		own, _, _, err := s.first()
		if err != nil {
			return "no configuration: " + err.Error(), false
		}
		foreign, end := s.end(own, time.Until(leaf.NotAfter)+10*time.Second)
		late := time.Since(leaf.NotAfter)
		return fmt.Sprintf("%v, %s after expiry; %d new resources", end, late.Round(100*time.Millisecond), foreign),
			grpcstatus.Code(end) == codes.Unauthenticated && strings.Contains(fmt.Sprint(end), "expired") && late < 3*time.Second && foreign == 0
	})
	c.proc.Stop()
	e.logs = append(e.logs, c.proc)
	c.start()
	r.check("token", "a used join token, after a control-plane restart", "UNAUTHENTICATED: already used", func() (string, bool) {
		_, _, err := join(c.addr, used)
		return fmt.Sprint(err), grpcstatus.Code(err) == codes.Unauthenticated && strings.Contains(fmt.Sprint(err), "already used")
	})
	e.logs = append(e.logs, c.proc)
}

func grpcClient(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}
