package securefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAtomicModeAndReplace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := EnsureDir(dir, DirMode); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "f")
	for _, content := range []string{"one", "two"} {
		if err := WriteAtomic(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, err := ReadPrivate(p)
		if err != nil || string(got) != content {
			t.Fatalf("ReadPrivate = %q, %v; want %q", got, err, content)
		}
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != FileMode {
		t.Fatalf("mode = %v, %v", st.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v %v", entries, err)
	}
}

func TestReadPrivateRefusesLooseModes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivate(p); err == nil {
		t.Fatal("a 0644 key file was read")
	}
}

func TestCreateExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := CreateExclusive(p, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := CreateExclusive(p, []byte("b")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v, want ErrExist", err)
	}
}

func TestEnsureDirTightens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDir(dir, DirMode); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != DirMode {
		t.Fatalf("mode = %v", st.Mode().Perm())
	}
}

func TestLockSerializes(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".lock")
	l, err := Acquire(p)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		l2, err := Acquire(p)
		if err == nil {
			err = l2.Release()
		}
		if err != nil {
			t.Error(err)
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("second Acquire did not wait")
	default:
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	<-got
}

func TestTryAcquire(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".lock")
	l, err := TryAcquire(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryAcquire(p); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryAcquire: %v, want ErrLocked", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = TryAcquire(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
}
