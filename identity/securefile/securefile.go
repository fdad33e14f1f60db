// Package securefile writes the control plane's and the agent's state files (keys, used tokens,
// revocations, proxy registrations): private directories, owner-only files replaced atomically
// with fsync, and an advisory lock for read-modify-write cycles shared by the control plane and
// the CLI commands that edit the same data directory. Every state file is written through it.
package securefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// DirMode and FileMode are the modes of everything the identity packages keep on disk.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// EnsureDir creates dir (and parents) with mode perm, or tightens an existing directory to it.
func EnsureDir(dir string, perm fs.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("securefile: %s is not a directory", dir)
	}
	if st.Mode().Perm() != perm {
		if err := os.Chmod(dir, perm); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return fmt.Errorf("securefile: %s has mode %v and belongs to another user, who alone can make it private: give a directory of this user's own (e.g. one inside it): %w", dir, st.Mode().Perm(), err)
			}
			return fmt.Errorf("securefile: %w", err)
		}
	}
	return nil
}

// WriteAtomic replaces path with data: it writes a temporary file in the same directory with mode
// 0600, syncs it, renames it over path and syncs the directory, so a crash leaves either the old
// or the new content, never a torn file.
func WriteAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreNotExist(os.Remove(tmp.Name())))
		}
	}()
	if err := tmp.Chmod(FileMode); err != nil {
		return errors.Join(fmt.Errorf("securefile: %w", err), tmp.Close())
	}
	if _, err := tmp.Write(data); err != nil {
		return errors.Join(fmt.Errorf("securefile: writing %s: %w", path, err), tmp.Close())
	}
	if err := tmp.Sync(); err != nil {
		return errors.Join(fmt.Errorf("securefile: syncing %s: %w", path, err), tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	return syncDir(dir)
}

// CreateExclusive writes data to a new file at path and fails with fs.ErrExist when it is
// already there, so two processes racing to create a key cannot both win.
func CreateExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, FileMode)
	if err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return errors.Join(fmt.Errorf("securefile: writing %s: %w", path, err), f.Close(), os.Remove(path))
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("securefile: syncing %s: %w", path, err), f.Close(), os.Remove(path))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// ReadPrivate reads a file that must not be readable or writable by group or others: a key left
// world-readable is refused rather than silently used.
func ReadPrivate(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("securefile: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("securefile: %s has mode %s; it holds secrets and must be 0600", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("securefile: %w", err)
	}
	return data, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("securefile: %w", err)
	}
	err = d.Sync()
	return errors.Join(wrap(err), wrap(d.Close()))
}

// Lock is an exclusive advisory lock on a file, held from Acquire until Release.
type Lock struct{ f *os.File }

// Acquire blocks until it holds the lock file at path (created 0600 when missing).
func Acquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("securefile: lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("securefile: lock %s: %w", path, err), f.Close())
	}
	return &Lock{f: f}, nil
}

// ErrLocked means another process holds a lock that TryAcquire would not wait for.
var ErrLocked = errors.New("securefile: locked by another process")

// TryAcquire takes the lock file at path without waiting: ErrLocked when another process (or
// another open of the file) holds it.
func TryAcquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("securefile: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		cerr := f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errors.Join(fmt.Errorf("%w: %s", ErrLocked, path), cerr)
		}
		return nil, errors.Join(fmt.Errorf("securefile: lock %s: %w", path, err), cerr)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock.
func (l *Lock) Release() error {
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return errors.Join(wrap(err), wrap(l.f.Close()))
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("securefile: %w", err)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
