package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The keys of the Redis Secret: the password the control plane authenticates with, and the
// same password as a Redis configuration line, which deploy/'s Redis includes from its mounted
// Secret (so the password is never in Redis's command line or environment).
const (
	redisPasswordKey = "password"
	redisAuthConfKey = "auth.conf"
)

// redisPassword returns the password of the Redis that holds Global limits' buckets, from the
// Secret name in the control plane's namespace. The first replica to start creates the Secret
// with a random password (the API server's create decides between replicas starting at once,
// as for the CA Secret); deploy/'s Redis waits for it, since its pod mounts it. Users who run
// their own Redis create the Secret themselves, with at least the password key.
func redisPassword(ctx context.Context, client kubernetes.Interface, namespace, name string) (string, error) {
	secrets := client.CoreV1().Secrets(namespace)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s, err = createRedisSecret(ctx, client, namespace, name)
	}
	if err != nil {
		return "", fmt.Errorf("controlplane: Redis password Secret %s/%s: %w", namespace, name, err)
	}
	pw := string(s.Data[redisPasswordKey])
	if pw == "" {
		return "", fmt.Errorf("controlplane: Redis password Secret %s/%s: no %q key (the password Global limits' Redis requires)", namespace, name, redisPasswordKey)
	}
	return pw, nil
}

// createRedisSecret creates the Secret with a new random password, or returns the one another
// replica created first.
func createRedisSecret(ctx context.Context, client kubernetes.Interface, namespace, name string) (*corev1.Secret, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	pw := hex.EncodeToString(raw)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "portcullis"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			redisPasswordKey: []byte(pw),
			redisAuthConfKey: []byte("requirepass " + pw + "\n"),
		},
	}
	created, err := client.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	}
	return created, err
}
