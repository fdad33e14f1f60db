package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certpb"
)

// rpcTimeout bounds one Sign call, connection included.
const rpcTimeout = 15 * time.Second

// newCSR makes a key and a CSR for id.
func newCSR(id spiffeid.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ca.NewKey()
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: CSR: %w", err)
	}
	return key, der, nil
}

// join obtains a first SVID with a join token, verifying the control plane by the token's pins.
func join(ctx context.Context, addr string, raw string, now time.Time) (*Identity, error) {
	tok, err := attest.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("agent: token file: %w", err)
	}
	cpID := ca.ControlPlaneID(tok.SPIFFEID.TrustDomain())
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is by pin, not by hostname: the agent holds no bundle yet.
		InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate verifies against the pinned roots.
		VerifyPeerCertificate: verifyByPins(tok.Pins, cpID, now),
	}
	key, csr, err := newCSR(tok.SPIFFEID)
	if err != nil {
		return nil, err
	}
	resp, err := callSign(ctx, addr, cfg, &certpb.SignRequest{Csr: csr, JoinToken: raw})
	if err != nil {
		return nil, err
	}
	// The bundle adopted must be the one the token vouched for.
	if !slices.ContainsFunc(resp.GetTrustBundle(), func(der []byte) bool {
		c, err := x509.ParseCertificate(der)
		return err == nil && slices.Contains(tok.Pins, ca.Pin(c))
	}) {
		return nil, errors.New("agent: the control plane's trust bundle holds none of the token's pinned roots")
	}
	return checkResponse(resp, key, tok.SPIFFEID, now)
}

// joinServiceAccount obtains a first SVID with the pod's projected service-account token. The
// SPIFFE ID asked for is the one the token's claims name (the control plane checks them with
// the API server); the control plane is verified by the pins of the trust bundle's roots the
// injector gave the agent, as with a join token.
func joinServiceAccount(ctx context.Context, addr, raw string, td spiffeid.TrustDomain, pins []string, now time.Time) (*Identity, error) {
	ns, sa, err := attest.ServiceAccountClaims(raw)
	if err != nil {
		return nil, fmt.Errorf("agent: service account token file: %w", err)
	}
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return nil, fmt.Errorf("agent: service account %s/%s: %w", ns, sa, err)
	}
	cfg := &tls.Config{
		MinVersion:            tls.VersionTLS12,
		InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate verifies against the pinned roots.
		VerifyPeerCertificate: verifyByPins(pins, ca.ControlPlaneID(td), now),
	}
	key, csr, err := newCSR(id)
	if err != nil {
		return nil, err
	}
	resp, err := callSign(ctx, addr, cfg, &certpb.SignRequest{Csr: csr, ServiceAccountToken: raw})
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(resp.GetTrustBundle(), func(der []byte) bool {
		c, err := x509.ParseCertificate(der)
		return err == nil && slices.Contains(pins, ca.Pin(c))
	}) {
		return nil, errors.New("agent: the control plane's trust bundle holds none of the pinned roots")
	}
	return checkResponse(resp, key, id, now)
}

// renew obtains a new SVID over mTLS with the current one, verifying the control plane with the
// current bundle.
func renew(ctx context.Context, addr string, cur *Identity, now time.Time) (*Identity, error) {
	cpID := ca.ControlPlaneID(cur.ID().TrustDomain())
	cfg := tlsconfig.MTLSClientConfig(cur, cur, tlsconfig.AuthorizeID(cpID))
	key, csr, err := newCSR(cur.ID())
	if err != nil {
		return nil, err
	}
	resp, err := callSign(ctx, addr, cfg, &certpb.SignRequest{Csr: csr})
	if err != nil {
		return nil, err
	}
	return checkResponse(resp, key, cur.ID(), now)
}

func callSign(ctx context.Context, addr string, cfg *tls.Config, req *certpb.SignRequest) (*certpb.SignResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("agent: control plane %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := certpb.NewCertificateServiceClient(conn).Sign(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("agent: control plane %s: %w", addr, err)
	}
	return resp, nil
}

func checkResponse(resp *certpb.SignResponse, key *ecdsa.PrivateKey, want spiffeid.ID, now time.Time) (*Identity, error) {
	id, err := newIdentity(resp.GetCertChain(), key, resp.GetTrustBundle(), now)
	if err != nil {
		return nil, err
	}
	if id.ID() != want {
		return nil, fmt.Errorf("agent: control plane issued %s, asked for %s", id.ID(), want)
	}
	return id, nil
}

// verifyByPins accepts the control plane's certificate when its chain (which the control plane
// sends up to and including its root) reaches a root whose SPKI hash the token pins, and the
// leaf is the control plane's SVID.
func verifyByPins(pins []string, cpID spiffeid.ID, now time.Time) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs, err := parseAll(raw)
		if err != nil {
			return fmt.Errorf("agent: control plane certificate: %w", err)
		}
		var pinned []*x509.Certificate
		for _, c := range certs {
			if c.IsCA && slices.Contains(pins, ca.Pin(c)) && c.CheckSignatureFrom(c) == nil {
				pinned = append(pinned, c)
			}
		}
		if len(pinned) == 0 {
			return errors.New("agent: the control plane's certificate chain holds no root pinned by the join token (was the CA rotated since the token was made? create a new token)")
		}
		id, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(cpID.TrustDomain(), pinned), x509svid.WithTime(now))
		if err != nil {
			return fmt.Errorf("agent: control plane certificate: %w", err)
		}
		if id != cpID {
			return fmt.Errorf("agent: control plane presented %s, want %s", id, cpID)
		}
		return nil
	}
}
