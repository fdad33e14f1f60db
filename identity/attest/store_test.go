package attest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestSigningKeyPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateSigningKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateSigningKey(dir)
	if err != nil || !a.Equal(b) {
		t.Fatalf("second load = %v (equal %v)", err, a.Equal(b))
	}
	st, err := os.Stat(filepath.Join(dir, DirName, SigningKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode().Perm(), err)
	}
}

func TestUsedTokensSingleUseAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	now := t0
	clock := func() time.Time { return now }
	u, err := OpenUsedTokens(dir, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenUsedTokens(dir, clock, nil); err == nil {
		t.Fatal("a second holder of the used-token store was allowed")
	}
	if err := u.Use("a", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := u.Use("short", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := u.Use("a", now.Add(time.Hour)); !errors.Is(err, ErrTokenReused) {
		t.Fatalf("reuse: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	u, err = OpenUsedTokens(dir, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.Use("a", now.Add(time.Hour)); !errors.Is(err, ErrTokenReused) {
		t.Fatalf("reuse after restart: %v", err)
	}
	if u.Len() != 1 {
		t.Errorf("expired entry not pruned: %d entries", u.Len())
	}
	st, err := os.Stat(filepath.Join(dir, DirName, UsedFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("used file mode %v, %v", st.Mode().Perm(), err)
	}
}

func TestUsedTokensConcurrent(t *testing.T) {
	u, err := OpenUsedTokens(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	exp := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[string]int{}
	for i := range 400 {
		wg.Go(func() {
			id := fmt.Sprint(i % 200) // every token twice
			if err := u.Use(id, exp); err == nil {
				mu.Lock()
				accepted[id]++
				mu.Unlock()
			} else if !errors.Is(err, ErrTokenReused) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(accepted) != 200 {
		t.Fatalf("%d distinct tokens accepted, want 200", len(accepted))
	}
	for id, n := range accepted {
		if n != 1 {
			t.Fatalf("token %s accepted %d times", id, n)
		}
	}
}
