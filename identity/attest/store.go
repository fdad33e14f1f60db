package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/portcullis/portcullis/identity/internal/securefile"
)

// Files of the token store inside the data directory (docs/identity.md lists them).
const (
	// DirName is the token directory under the data directory (0700).
	DirName = "tokens"
	// SigningKeyFile is the Ed25519 key that signs join tokens (PKCS#8 PEM, 0600).
	SigningKeyFile = "signing.key"
	// UsedFile maps used token ids to their expiry (0600), replaced atomically on every use.
	UsedFile = "used.json"
	// usedLockFile is held by the one control plane that accepts tokens from this directory.
	usedLockFile = ".used.lock"
)

// LoadOrCreateSigningKey returns the token signing key of dataDir, creating it on first use. Two
// processes racing to create it agree on one key.
func LoadOrCreateSigningKey(dataDir string) (ed25519.PrivateKey, error) {
	dir := filepath.Join(dataDir, DirName)
	if err := securefile.EnsureDir(dir, securefile.DirMode); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	path := filepath.Join(dir, SigningKeyFile)
	key, err := readSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	err = securefile.CreateExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if errors.Is(err, fs.ErrExist) {
		return readSigningKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	return priv, nil
}

func readSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := securefile.ReadPrivate(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("attest: %s: want one PKCS#8 PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("attest: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("attest: %s: key is %T, want Ed25519", path, k)
	}
	return priv, nil
}

// UsedTokens remembers which tokens were used, in memory and in the data directory, until they
// expire. One control plane at a time may hold it for a directory: two would each accept a token
// once. Concurrent uses are committed together (one file write for a burst of joins).
type UsedTokens struct {
	path  string
	lock  *securefile.Lock
	clock func() time.Time
	log   *slog.Logger

	mu        sync.Mutex
	used      map[string]time.Time
	dirty     uint64 // generation of the in-memory set
	persisted uint64 // generation last written

	writeMu sync.Mutex
}

type usedFile struct {
	Version int                  `json:"version"`
	Used    map[string]time.Time `json:"used"`
}

// OpenUsedTokens loads the used-token set of dataDir and takes its lock until Close.
func OpenUsedTokens(dataDir string, clock func() time.Time, log *slog.Logger) (*UsedTokens, error) {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(dataDir, DirName)
	if err := securefile.EnsureDir(dir, securefile.DirMode); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	lock, err := securefile.TryAcquire(filepath.Join(dir, usedLockFile))
	if errors.Is(err, securefile.ErrLocked) {
		return nil, fmt.Errorf("attest: another control plane is using the data directory %s: %w", dataDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	u := &UsedTokens{path: filepath.Join(dir, UsedFile), lock: lock, clock: clock, log: log, used: map[string]time.Time{}}
	data, err := securefile.ReadPrivate(u.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, errors.Join(fmt.Errorf("attest: %w", err), lock.Release())
	default:
		var f usedFile
		if err := json.Unmarshal(data, &f); err != nil || f.Version != 1 {
			return nil, errors.Join(fmt.Errorf("attest: %s: unreadable (version %d): %v", u.path, f.Version, err), lock.Release())
		}
		now := clock()
		for id, exp := range f.Used {
			if now.Before(exp) {
				u.used[id] = exp
			}
		}
	}
	return u, nil
}

// Close releases the directory's lock.
func (u *UsedTokens) Close() error { return u.lock.Release() }

// Len returns how many unexpired tokens are remembered.
func (u *UsedTokens) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.used)
}

// Use marks token id (valid until exp) used and returns once that is on disk; ErrTokenReused if
// it was used before. A token whose use could not be persisted stays used in memory: failing
// closed beats a token accepted twice across a restart.
func (u *UsedTokens) Use(id string, exp time.Time) error {
	u.mu.Lock()
	if _, ok := u.used[id]; ok {
		u.mu.Unlock()
		return fmt.Errorf("%w (token id %s)", ErrTokenReused, id)
	}
	u.used[id] = exp
	u.dirty++
	want := u.dirty
	u.mu.Unlock()
	return u.persist(want)
}

// persist writes the set unless a write that already covers generation want has happened: the
// first waiter writes for everyone queued behind it (group commit).
func (u *UsedTokens) persist(want uint64) error {
	u.writeMu.Lock()
	defer u.writeMu.Unlock()
	u.mu.Lock()
	if u.persisted >= want {
		u.mu.Unlock()
		return nil
	}
	now := u.clock()
	for id, exp := range u.used {
		if !now.Before(exp) {
			delete(u.used, id)
		}
	}
	snapshot := usedFile{Version: 1, Used: maps.Clone(u.used)}
	gen := u.dirty
	u.mu.Unlock()
	data, err := json.Marshal(snapshot)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	if err := securefile.WriteAtomic(u.path, data); err != nil {
		u.log.Error("persisting used join tokens failed; the tokens stay used in memory", "file", u.path, "err", err)
		return fmt.Errorf("attest: recording used token: %w", err)
	}
	u.mu.Lock()
	u.persisted = max(u.persisted, gen)
	u.mu.Unlock()
	return nil
}
