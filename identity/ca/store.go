package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/securefile"
)

// store is the running CA's side of the data directory (state.go has the format): it creates
// the CA on first use, loads authorities, writes renewed intermediates and reads the revocation
// list, taking the lock the CLI takes for each read-modify-write. It decides nothing about time:
// the rotator says when to reload and what to renew.
type store struct {
	dataDir                           string
	td                                spiffeid.TrustDomain
	up                                *upstream // --ca-cert/--ca-key; nil when the CA makes its own root
	tmpl                              *Templates
	rootTTL, intermediateTTL, svidTTL time.Duration
	log                               *slog.Logger
}

// init creates or updates the state file under the lock: the first authority, a new upstream
// authority when --ca-cert names a different root, and the longest SVID TTL.
func (s *store) init(now time.Time) error {
	lock, err := lockState(s.dataDir)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Release() }() // closing the file releases the lock anyway
	st, err := ReadState(s.dataDir)
	switch {
	case errors.Is(err, ErrNoCA):
		st = &State{TrustDomain: s.td.Name()}
	case err != nil:
		return err
	case st.TrustDomain != s.td.Name():
		return fmt.Errorf("ca: the CA in %s is for trust domain %q, not %q; a trust domain cannot change without a new data directory", s.dataDir, st.TrustDomain, s.td.Name())
	}
	dirty := false
	if ttl := int64(s.svidTTL / time.Second); ttl > st.MaxSVIDTTLSeconds {
		st.MaxSVIDTTLSeconds, dirty = ttl, true
	}
	var active AuthorityPhase
	if len(st.Authorities) > 0 {
		phases, err := st.Phases(now)
		if err != nil {
			return err
		}
		active = activeRecord(phases)
	}
	switch {
	case s.up != nil:
		same, err := s.upstreamIsActive(active)
		if err != nil {
			return err
		}
		if !same {
			rec, err := s.addUpstreamAuthority(now)
			if err != nil {
				return err
			}
			if active.ID != "" {
				s.log.Warn("CA root changed (new --ca-cert); the previous root stays in the trust bundle until the SVIDs it signed have expired",
					"previous_authority", active.ID, "authority", rec.ID, "overlap", (st.MaxSVIDTTL() + DropGrace).String())
			}
			st.Authorities, dirty = append(st.Authorities, rec), true
		}
	case len(st.Authorities) == 0:
		id, err := newAuthorityID(now)
		if err != nil {
			return err
		}
		a, err := createManagedAuthority(s.dataDir, id, s.tmpl, s.rootTTL, s.intermediateTTL)
		if err != nil {
			return err
		}
		s.log.Info("created CA root and intermediate", "authority", id, "root_serial", a.root.SerialNumber.Text(16),
			"root_expires", a.root.NotAfter.UTC().Format(time.RFC3339), "dir", authorityDir(s.dataDir, id))
		st.Authorities = append(st.Authorities, AuthorityRecord{ID: id, CreatedAt: now, ActivateAt: now})
		dirty = true
	case active.Upstream:
		return fmt.Errorf("ca: the active CA authority %s came from --ca-cert; start the control plane with the same --ca-cert and --ca-key (or give new ones)", active.ID)
	}
	if dirty {
		return writeState(s.dataDir, st)
	}
	return nil
}

func (s *store) upstreamIsActive(active AuthorityPhase) (bool, error) {
	if active.ID == "" || !active.Upstream {
		return false, nil
	}
	data, err := os.ReadFile(filepath.Join(authorityDir(s.dataDir, active.ID), RootFile))
	if err != nil {
		return false, fmt.Errorf("ca: %w", err)
	}
	certs, _, err := DecodePEM(data)
	if err != nil {
		return false, fmt.Errorf("ca: authority %s: %w", active.ID, err)
	}
	return len(certs) == 1 && certs[0].Equal(s.up.root), nil
}

func (s *store) addUpstreamAuthority(now time.Time) (AuthorityRecord, error) {
	id, err := newAuthorityID(now)
	if err != nil {
		return AuthorityRecord{}, err
	}
	dir := authorityDir(s.dataDir, id)
	if err := ensureDir(dir); err != nil {
		return AuthorityRecord{}, err
	}
	if err := createExclusive(filepath.Join(dir, RootFile), EncodeCertsPEM(s.up.root)); err != nil {
		return AuthorityRecord{}, err
	}
	return AuthorityRecord{ID: id, Upstream: true, CreatedAt: now, ActivateAt: now}, nil
}

// stateStamp identifies the state file's current version, to reread it only when replaced.
func (s *store) stateStamp() (fileStamp, error) {
	return statFile(filepath.Join(caDir(s.dataDir), StateFile))
}

// readState reads the state file, refusing one that names another trust domain.
func (s *store) readState() (*State, error) {
	st, err := ReadState(s.dataDir)
	if err != nil {
		return nil, err
	}
	if st.TrustDomain != s.td.Name() {
		return nil, fmt.Errorf("ca: %s now names trust domain %q; keeping %q", StateFile, st.TrustDomain, s.td.Name())
	}
	return st, nil
}

// loadAuthority reads an authority's files; an upstream authority gets its keys from --ca-key.
func (s *store) loadAuthority(rec AuthorityRecord) (*authority, error) {
	return loadAuthority(s.dataDir, rec, s.up)
}

// renew issues a new intermediate for a under the lock and writes it.
func (s *store) renew(a *authority) (*authority, error) {
	lock, err := lockState(s.dataDir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lock.Release() }()
	next, capped, err := a.renewIntermediate(s.dataDir, s.tmpl, s.intermediateTTL)
	if err != nil {
		return nil, fmt.Errorf("ca: renewing intermediate of %s: %w", a.id, err)
	}
	attrs := []any{"authority", a.id, "serial", next.signingCert().SerialNumber.Text(16), "expires", next.signingCert().NotAfter.UTC().Format(time.RFC3339)}
	if capped != nil {
		s.log.Warn("issued intermediate CA, its lifetime capped by the root's remaining life; rotate the root (portcullis ca rotate)",
			append(attrs, "requested_ttl", capped.Requested.String(), "granted_ttl", capped.Granted.Round(time.Second).String())...)
	} else {
		s.log.Info("issued intermediate CA", attrs...)
	}
	return next, nil
}

// revocationsPath is the revocation list the CLI writes.
func (s *store) revocationsPath() string { return filepath.Join(caDir(s.dataDir), RevokedFile) }

// revocations reads the revocation list into its lookup form.
func (s *store) revocations() (*revocations, error) {
	f, err := readRevocations(s.dataDir)
	if err != nil {
		return nil, err
	}
	return f.lookup()
}

// fileStamp detects a replaced file (atomic renames change the inode and mtime).
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func statFile(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, fmt.Errorf("ca: %w", err)
	}
	return fileStamp{mod: st.ModTime(), size: st.Size(), ino: inode(st)}, nil
}

func inode(st fs.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}

func ensureDir(dir string) error {
	if err := securefile.EnsureDir(dir, securefile.DirMode); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func createExclusive(path string, data []byte) error {
	if err := securefile.CreateExclusive(path, data); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}
