package kubereview_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/attest/kubereview"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certpb"
	"github.com/portcullis/portcullis/identity/internal/cptest"
	"github.com/portcullis/portcullis/test/kubetest"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

// fixture is a namespace with service accounts web and admin and a pod running as web.
type fixture struct {
	env *kubetest.Env
	ns  string
	pod *corev1.Pod
}

func newFixture(t *testing.T, ns string) *fixture {
	t.Helper()
	env := kubetest.Require(t, &api)
	ctx := context.Background()
	c := env.Client
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"web", "admin"} {
		if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{env: env, ns: ns, pod: pod}
}

// token asks the API server for a token of sa, bound to the pod unless unbound.
func (f *fixture) token(t *testing.T, sa, audience string, bound bool) string {
	t.Helper()
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)}}
	if bound {
		req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: f.pod.Name, UID: f.pod.UID}
	}
	tr, err := f.env.Client.CoreV1().ServiceAccounts(f.ns).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func TestVerifyWithTokenReview(t *testing.T) {
	f := newFixture(t, "attest-verify")
	td := spiffeid.RequireTrustDomainFromString("example.org")
	v := attest.NewServiceAccountVerifier(td, kubereview.Client{Kube: f.env.Client}, kubereview.Client{Kube: f.env.Client})
	good := f.token(t, "web", attest.ServiceAccountAudience, true)
	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"projected token of the pod", good, nil},
		{"another audience", f.token(t, "web", "https://kubernetes.default.svc", true), attest.ErrSATokenInvalid},
		{"not bound to a pod", f.token(t, "web", attest.ServiceAccountAudience, false), attest.ErrSATokenNotBound},
		{"garbage", "not-a-token", attest.ErrSATokenInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sa, err := v.Verify(context.Background(), c.token)
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := "spiffe://example.org/ns/attest-verify/sa/web"; sa.SPIFFEID.String() != want || sa.Pod != "web-0" {
				t.Fatalf("got %s (pod %s), want %s (pod web-0)", sa.SPIFFEID, sa.Pod, want)
			}
		})
	}
	// Once the pod is deleted, its tokens prove nothing.
	if err := f.env.Client.CoreV1().Pods(f.ns).Delete(context.Background(), f.pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := v.Verify(context.Background(), good)
		if errors.Is(err, attest.ErrSATokenPodGone) || errors.Is(err, attest.ErrSATokenInvalid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token of a deleted pod: got %v, want a refusal", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentJoinsWithServiceAccountToken: the agent gets the SVID of its pod's service account
// from the certificate service, verifying the control plane by pins; a CSR for another service
// account with the same token is refused.
func TestAgentJoinsWithServiceAccountToken(t *testing.T) {
	f := newFixture(t, "attest-join")
	rev := kubereview.Client{Kube: f.env.Client}
	cp := cptest.Start(t, cptest.Options{ServiceAccounts: attest.NewServiceAccountVerifier(cptest.TrustDomain, rev, rev)})
	var pins []string
	for _, r := range cp.CA.Roots() {
		pins = append(pins, ca.Pin(r))
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	token := f.token(t, "web", attest.ServiceAccountAudience, true)
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{ControlPlane: cp.Addr, SocketDir: filepath.Join(dir, "sock"), NoPersist: true,
		ServiceAccountTokenFile: tokenFile, TrustDomain: cptest.TrustDomain, Pins: pins, BackoffMin: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	for {
		id, changed := a.Current()
		if id != nil {
			if want := "spiffe://example.org/ns/attest-join/sa/web"; id.ID().String() != want {
				t.Fatalf("agent got %s, want %s", id.ID(), want)
			}
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no SVID: %v\n%s", ctx.Err(), cp.Logs.String())
		}
	}

	// Same token, CSR for the admin account: refused.
	key, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other := spiffeid.RequireFromPath(cptest.TrustDomain, "/ns/attest-join/sa/admin")
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{other.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(cptest.TrustDomain, cp.CA.Roots()), tlsconfig.AuthorizeID(ca.ControlPlaneID(cptest.TrustDomain)))
	conn, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg.Clone())))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = certpb.NewCertificateServiceClient(conn).Sign(ctx, &certpb.SignRequest{Csr: csr, ServiceAccountToken: token})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CSR for another service account: got %v, want PermissionDenied", err)
	}
}
