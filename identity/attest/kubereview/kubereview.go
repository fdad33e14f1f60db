// Package kubereview connects attest's service-account verification to a Kubernetes API
// server: TokenReview for the token, a GET of the pod for its existence.
package kubereview

import (
	"context"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/portcullis/portcullis/identity/attest"
)

// Client implements attest.TokenReviewer and attest.PodChecker with a clientset. Its RBAC:
// create tokenreviews, get pods.
type Client struct{ Kube kubernetes.Interface }

var (
	_ attest.TokenReviewer = Client{}
	_ attest.PodChecker    = Client{}
)

// Review implements attest.TokenReviewer.
func (c Client) Review(ctx context.Context, token string, audiences []string) (attest.ReviewResult, error) {
	tr, err := c.Kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return attest.ReviewResult{}, fmt.Errorf("kubereview: %w", err)
	}
	st := tr.Status
	extra := make(map[string][]string, len(st.User.Extra))
	for k, v := range st.User.Extra {
		extra[k] = v
	}
	return attest.ReviewResult{Authenticated: st.Authenticated, Username: st.User.Username, Audiences: st.Audiences, Extra: extra, Error: st.Error}, nil
}

// PodExists implements attest.PodChecker: the pod exists with that UID (a pod recreated under
// the same name is another pod).
func (c Client) PodExists(ctx context.Context, namespace, name, uid string) (bool, error) {
	p, err := c.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kubereview: %w", err)
	}
	return p.UID == types.UID(uid) && p.DeletionTimestamp == nil, nil
}
