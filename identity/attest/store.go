package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/identity/securefile"
)

// Files of the token store inside the data directory (docs/identity.md lists them).
const (
	// DirName is the token directory under the data directory (0700).
	DirName = "tokens"
	// SigningKeyFile is the Ed25519 key that signs join tokens (PKCS#8 PEM, 0600).
	SigningKeyFile = "signing.key"
	// UsedFile is the append-only log of used token ids and their expiry (0600).
	UsedFile = "used.log"
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
	data, err := EncodeSigningKey(priv)
	if err != nil {
		return nil, err
	}
	err = securefile.CreateExclusive(path, data)
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
	key, err := parseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("attest: %s: %w", path, err)
	}
	return key, nil
}

// NewSigningKey returns a new token signing key, PEM-encoded as EncodeSigningKey does, for a key
// kept outside the data directory (on Kubernetes, in the CA Secret).
func NewSigningKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	return EncodeSigningKey(priv)
}

// EncodeSigningKey returns a token signing key as one PKCS#8 "PRIVATE KEY" PEM block.
func EncodeSigningKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseSigningKey reads a token signing key written by EncodeSigningKey: exactly one PKCS#8
// PEM block holding an Ed25519 key.
func ParseSigningKey(data []byte) (ed25519.PrivateKey, error) {
	key, err := parseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("attest: token signing key: %w", err)
	}
	return key, nil
}

func parseSigningKey(data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("want one PKCS#8 PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want Ed25519", k)
	}
	return priv, nil
}

// UsedTokens remembers which tokens were used, in memory and in the data directory, until they
// expire. The file is an append-only log ("<token id> <expiry unix seconds>" per line), so a use
// costs one appended line and one fsync whatever the number of tokens remembered; concurrent
// uses share one write and one fsync (group commit). The log is compacted (expired entries
// dropped, replaced atomically) on open and when it has grown to twice the live entries.
// One control plane at a time may hold it for a directory: two would each accept a token once.
type UsedTokens struct {
	path  string
	lock  *securefile.Lock
	clock func() time.Time
	log   *slog.Logger

	mu        sync.Mutex
	used      map[string]time.Time
	pending   []usedEntry // used in memory, not yet on disk
	dirty     uint64      // generation of the in-memory set
	persisted uint64      // generation on disk

	writeMu sync.Mutex // held while writing; guards f and lines
	f       *os.File
	lines   int // lines in the log file
}

type usedEntry struct {
	id  string
	exp time.Time
}

// minCompactLines keeps a small log from being rewritten over and over.
const minCompactLines = 1024

// OpenUsedTokens loads the used-token log of dataDir, compacts it, and takes its lock until Close.
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
	if err := u.load(); err != nil {
		return nil, errors.Join(err, lock.Release())
	}
	if err := u.compact(); err != nil {
		return nil, errors.Join(err, lock.Release())
	}
	return u, nil
}

// load reads the log. A last line without its newline is a write cut short by a crash (that use
// was never acknowledged) and is ignored; any other malformed line is an error, not a reason
// to forget which tokens were used.
func (u *UsedTokens) load() error {
	data, err := securefile.ReadPrivate(u.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	now := u.clock()
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if line == "" {
			continue
		}
		id, expStr, ok := strings.Cut(line, " ")
		exp, err := strconv.ParseInt(expStr, 10, 64)
		if !ok || err != nil || !hexID.MatchString(id) {
			if i == len(lines)-1 {
				u.log.Warn("ignoring a torn last line of the used-token log", "file", u.path)
				continue
			}
			return fmt.Errorf("attest: %s line %d is malformed; refusing to guess which tokens were used", u.path, i+1)
		}
		if t := time.Unix(exp, 0); now.Before(t) {
			u.used[id] = t
		}
	}
	return nil
}

// compact rewrites the log with the live entries only and reopens it for appending. The caller
// holds writeMu (or is OpenUsedTokens).
func (u *UsedTokens) compact() error {
	u.mu.Lock()
	now := u.clock()
	var b strings.Builder
	for id, exp := range u.used {
		if !now.Before(exp) {
			delete(u.used, id)
			continue
		}
		fmt.Fprintf(&b, "%s %d\n", id, exp.Unix())
	}
	live := len(u.used)
	u.mu.Unlock()
	if u.f != nil {
		if err := u.f.Close(); err != nil {
			return fmt.Errorf("attest: %w", err)
		}
		u.f = nil
	}
	if err := securefile.WriteAtomic(u.path, []byte(b.String())); err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	f, err := os.OpenFile(u.path, os.O_WRONLY|os.O_APPEND, securefile.FileMode)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	u.f, u.lines = f, live
	return nil
}

// Close releases the directory's lock.
func (u *UsedTokens) Close() error {
	u.writeMu.Lock()
	defer u.writeMu.Unlock()
	var err error
	if u.f != nil {
		err = u.f.Close()
	}
	return errors.Join(err, u.lock.Release())
}

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
	if err := CheckTokenID(id); err != nil {
		return err
	}
	u.mu.Lock()
	if _, ok := u.used[id]; ok {
		u.mu.Unlock()
		return fmt.Errorf("%w (token id %s)", ErrTokenReused, id)
	}
	u.used[id] = exp
	u.pending = append(u.pending, usedEntry{id, exp})
	u.dirty++
	want := u.dirty
	u.mu.Unlock()
	return u.persist(want)
}

// persist writes what is pending unless a write covering generation want already happened: the
// first waiter writes for everyone queued behind it.
func (u *UsedTokens) persist(want uint64) error {
	u.writeMu.Lock()
	defer u.writeMu.Unlock()
	u.mu.Lock()
	if u.persisted >= want {
		u.mu.Unlock()
		return nil
	}
	batch, gen, live := u.pending, u.dirty, len(u.used)
	u.pending = nil
	u.mu.Unlock()
	var b strings.Builder
	for _, e := range batch {
		fmt.Fprintf(&b, "%s %d\n", e.id, e.exp.Unix())
	}
	if err := u.appendSync(b.String()); err != nil {
		u.log.Error("persisting used join tokens failed; the tokens stay used in memory", "file", u.path, "err", err)
		if u.f != nil { // a partial line may be on disk: the next write rewrites the whole log
			_ = u.f.Close() // already failing; the rewrite reports its own errors
			u.f = nil
		}
		u.mu.Lock()
		u.pending = append(batch, u.pending...) // retried with the next use
		u.mu.Unlock()
		return fmt.Errorf("attest: recording used token: %w", err)
	}
	u.lines += len(batch)
	u.mu.Lock()
	u.persisted = max(u.persisted, gen)
	u.mu.Unlock()
	if u.lines > max(minCompactLines, 2*live) {
		if err := u.compact(); err != nil {
			// The appended log is complete; a failed compaction only costs disk space.
			u.log.Warn("compacting the used-token log failed", "file", u.path, "err", err)
		}
	}
	return nil
}

func (u *UsedTokens) appendSync(lines string) error {
	if u.f == nil {
		if err := u.compact(); err != nil {
			return err
		}
	}
	if _, err := u.f.WriteString(lines); err != nil {
		return err
	}
	return u.f.Sync()
}
