package controlplane

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/kubetest"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

func TestRedisPasswordSecret(t *testing.T) {
	env := kubetest.Require(t, &api)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := "redis-secret"
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("replicas starting at once agree on one password", func(t *testing.T) {
		var wg sync.WaitGroup
		got := make([]string, 4)
		errs := make([]error, 4)
		for i := range got {
			wg.Go(func() { got[i], errs[i] = redisPassword(ctx, env.Client, ns, "portcullis-redis") })
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("replica %d: %v", i, errs[i])
			}
			if got[i] != got[0] {
				t.Fatalf("replica %d got another password than replica 0", i)
			}
		}
		if len(got[0]) != 64 {
			t.Fatalf("password of %d characters, want 64 (32 random bytes, hex)", len(got[0]))
		}
		s, err := env.Client.CoreV1().Secrets(ns).Get(ctx, "portcullis-redis", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if conf := string(s.Data[redisAuthConfKey]); conf != "requirepass "+got[0]+"\n" {
			t.Fatalf("%s does not set the same password for Redis", redisAuthConfKey)
		}
		again, err := redisPassword(ctx, env.Client, ns, "portcullis-redis")
		if err != nil || again != got[0] {
			t.Fatalf("a restarted replica: %v, same password %t", err, again == got[0])
		}
	})
	t.Run("a Secret without the password key is refused by name", func(t *testing.T) {
		if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "own-redis"}, Data: map[string][]byte{"pass": []byte("x")},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := redisPassword(ctx, env.Client, ns, "own-redis")
		if err == nil || !strings.Contains(err.Error(), ns+"/own-redis") || !strings.Contains(err.Error(), `"password"`) {
			t.Fatalf("got %v, want an error naming the Secret and its missing key", err)
		}
	})
}
