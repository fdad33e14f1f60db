package attest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Kubernetes service-account tokens as a bootstrap credential: the agent presents the projected
// token of its pod (audience "portcullis", short expiry, bound to the pod); the control plane
// asks the API server who it is (TokenReview), requires the audience and the pod binding, checks
// that the pod still exists, and binds it to spiffe://<td>/ns/<namespace>/sa/<account>.
const (
	// ServiceAccountAudience is the audience the projected token must be issued for: a token for
	// the API server (or any other audience) is never accepted, so a token leaked from another
	// purpose cannot join the mesh.
	ServiceAccountAudience = "portcullis"
	// MaxServiceAccountTokenBytes bounds what is read and sent to the API server.
	MaxServiceAccountTokenBytes = 16 << 10
)

// Extra keys the API server sets on a TokenReview of a pod-bound token.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Errors a service-account token is refused with; Verify wraps them with detail.
var (
	ErrSATokenInvalid  = errors.New("attest: service account token not authenticated by the API server")
	ErrSATokenAudience = errors.New("attest: service account token is not for audience " + ServiceAccountAudience)
	ErrSATokenNotBound = errors.New("attest: service account token is not bound to a pod")
	ErrSATokenPodGone  = errors.New("attest: the pod of the service account token no longer exists")
	ErrSAReview        = errors.New("attest: TokenReview failed")
)

// ReviewResult is what the API server said about a token (authentication.k8s.io TokenReview).
type ReviewResult struct {
	Authenticated bool
	Username      string
	Audiences     []string
	Extra         map[string][]string
	Error         string
}

// TokenReviewer asks the API server about a token for the given audiences.
type TokenReviewer interface {
	Review(ctx context.Context, token string, audiences []string) (ReviewResult, error)
}

// PodChecker reports whether a pod exists with the given UID.
type PodChecker interface {
	PodExists(ctx context.Context, namespace, name, uid string) (bool, error)
}

// ServiceAccount is a verified token's workload.
type ServiceAccount struct {
	Namespace, Name string
	Pod, PodUID     string
	SPIFFEID        spiffeid.ID
}

// ServiceAccountVerifier checks projected service-account tokens.
type ServiceAccountVerifier struct {
	td       spiffeid.TrustDomain
	reviewer TokenReviewer
	pods     PodChecker
}

// NewServiceAccountVerifier returns a verifier binding tokens to IDs of trust domain td.
func NewServiceAccountVerifier(td spiffeid.TrustDomain, reviewer TokenReviewer, pods PodChecker) *ServiceAccountVerifier {
	return &ServiceAccountVerifier{td: td, reviewer: reviewer, pods: pods}
}

var saUsername = regexp.MustCompile(`^system:serviceaccount:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$`)

// Verify asks the API server about token and returns the workload it proves.
func (v *ServiceAccountVerifier) Verify(ctx context.Context, token string) (*ServiceAccount, error) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > MaxServiceAccountTokenBytes {
		return nil, fmt.Errorf("%w: empty or longer than %d bytes", ErrSATokenInvalid, MaxServiceAccountTokenBytes)
	}
	r, err := v.reviewer.Review(ctx, token, []string{ServiceAccountAudience})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSAReview, err)
	}
	if !r.Authenticated {
		// The API server says "invalid bearer token" both for a bad signature and for a token
		// issued for another audience than the one asked for.
		return nil, fmt.Errorf("%w (audience %q): %s", ErrSATokenInvalid, ServiceAccountAudience, r.Error)
	}
	if !slices.Contains(r.Audiences, ServiceAccountAudience) {
		return nil, fmt.Errorf("%w (its audiences: %v)", ErrSATokenAudience, r.Audiences)
	}
	m := saUsername.FindStringSubmatch(r.Username)
	if m == nil {
		return nil, fmt.Errorf("%w: %q is not a service account", ErrSATokenInvalid, r.Username)
	}
	sa := &ServiceAccount{Namespace: m[1], Name: m[3]}
	if len(sa.Name) > 63 || strings.Contains(sa.Name, ".") {
		return nil, fmt.Errorf("%w: service account %q is not a DNS label, so it has no mesh identity", ErrSATokenInvalid, sa.Name)
	}
	if pod, uid := r.Extra[extraPodName], r.Extra[extraPodUID]; len(pod) == 1 && len(uid) == 1 {
		sa.Pod, sa.PodUID = pod[0], uid[0]
	} else {
		return nil, fmt.Errorf("%w: use the projected token of the pod (a serviceAccountToken volume), not a long-lived secret token", ErrSATokenNotBound)
	}
	ok, err := v.pods.PodExists(ctx, sa.Namespace, sa.Pod, sa.PodUID)
	if err != nil {
		return nil, fmt.Errorf("%w: looking up pod %s/%s: %w", ErrSAReview, sa.Namespace, sa.Pod, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s (uid %s)", ErrSATokenPodGone, sa.Namespace, sa.Pod, sa.PodUID)
	}
	id, err := spiffeid.FromSegments(v.td, "ns", sa.Namespace, "sa", sa.Name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSATokenInvalid, err)
	}
	sa.SPIFFEID = id
	return sa, nil
}

// ServiceAccountClaims reads, without verifying it, the namespace and service account a
// projected token names, so an agent knows which SPIFFE ID to ask for. The control plane never
// trusts these claims: it asks the API server.
func ServiceAccountClaims(token string) (namespace, serviceAccount string, err error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 || len(token) > MaxServiceAccountTokenBytes {
		return "", "", fmt.Errorf("%w: not a JWT", ErrSATokenInvalid)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", fmt.Errorf("%w: claims: %v", ErrSATokenInvalid, err)
	}
	var c struct {
		Kubernetes struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", "", fmt.Errorf("%w: claims: %v", ErrSATokenInvalid, err)
	}
	if c.Kubernetes.Namespace == "" || c.Kubernetes.ServiceAccount.Name == "" {
		return "", "", fmt.Errorf("%w: no kubernetes.io namespace and service account claims", ErrSATokenInvalid)
	}
	return c.Kubernetes.Namespace, c.Kubernetes.ServiceAccount.Name, nil
}
