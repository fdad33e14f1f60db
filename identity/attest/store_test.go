package attest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

const (
	tokA     = "0000000000000000000000000000000a"
	tokShort = "0000000000000000000000000000000b"
)

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
	if err := u.Use(tokA, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := u.Use(tokShort, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := u.Use(tokA, now.Add(time.Hour)); !errors.Is(err, ErrTokenReused) {
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
	if err := u.Use(tokA, now.Add(time.Hour)); !errors.Is(err, ErrTokenReused) {
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
			id := fmt.Sprintf("%032x", i%200) // every token twice
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

func TestUsedTokensLogRecovery(t *testing.T) {
	dir := t.TempDir()
	now := t0
	clock := func() time.Time { return now }
	u, err := OpenUsedTokens(dir, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := func(i int) string { return fmt.Sprintf("%032x", i) }
	for i := range 3000 { // crosses the compaction threshold
		exp := now.Add(time.Hour)
		if i < 2000 {
			exp = now.Add(time.Minute)
		}
		if err := u.Use(id(i), exp); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DirName, UsedFile)
	// A crash in the middle of an append leaves a torn last line: ignored.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(id(99999)[:20]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	now = now.Add(2 * time.Minute)
	u, err = OpenUsedTokens(dir, clock, nil)
	if err != nil {
		t.Fatalf("torn last line: %v", err)
	}
	if u.Len() != 1000 {
		t.Errorf("%d live entries after expiry, want 1000", u.Len())
	}
	if err := u.Use(id(2500), now.Add(time.Hour)); !errors.Is(err, ErrTokenReused) {
		t.Errorf("token used before the restart: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(data), "\n"); lines != 1000 {
		t.Errorf("compacted log has %d lines, want 1000", lines)
	}
	// Damage anywhere else: refuse rather than forget.
	if err := os.WriteFile(path, []byte("garbage\n"+string(data)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenUsedTokens(dir, clock, nil); err == nil {
		t.Fatal("a damaged log was accepted")
	}
}
