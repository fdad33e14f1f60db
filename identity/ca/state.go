package ca

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"time"

	"github.com/portcullis/portcullis/identity/securefile"
)

// Files of the CA inside the data directory (docs/identity.md lists them with their modes).
const (
	// DirName is the CA's directory under the data directory (0700).
	DirName = "ca"
	// StateFile records the trust domain, the longest SVID TTL ever configured and the
	// authorities (root generations) with their activation times.
	StateFile = "state.json"
	// RevokedFile lists revoked SVIDs by serial or SPIFFE ID.
	RevokedFile = "revoked.json"
	// RootFile (per authority directory) holds the root certificate and, for generated roots,
	// its key.
	RootFile = "root.pem"
	// IntermediateFile (per authority directory) holds the signing certificate and its key.
	IntermediateFile = "intermediate.pem"
	lockFile         = ".lock"
	stateVersion     = 1
)

// DropGrace is added to the longest SVID TTL before a retired root leaves the bundle, covering
// the time a running control plane takes to notice a rotation and clock differences.
const DropGrace = 5 * time.Minute

// State is the CA's state file.
type State struct {
	Version     int    `json:"version"`
	TrustDomain string `json:"trustDomain"`
	// MaxSVIDTTLSeconds is the longest SVID TTL this CA was ever configured with. A retired root
	// stays in the bundle, and a revocation stays listed, this long after it could last matter.
	MaxSVIDTTLSeconds int64             `json:"maxSVIDTTLSeconds"`
	Authorities       []AuthorityRecord `json:"authorities"`
}

// AuthorityRecord is one root generation.
type AuthorityRecord struct {
	ID string `json:"id"`
	// Upstream is set when the root came from --ca-cert: its key is not in the data directory.
	Upstream   bool      `json:"upstream,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	ActivateAt time.Time `json:"activateAt"`
}

// MaxSVIDTTL returns the longest SVID TTL ever configured.
func (s *State) MaxSVIDTTL() time.Duration { return time.Duration(s.MaxSVIDTTLSeconds) * time.Second }

// Phase is where an authority is in its life.
type Phase string

// Phases of an authority. A prepared root is in the bundle but not yet signing, so every agent
// learns it before any SVID chains to it; a retired root stays in the bundle until the last SVID
// it signed has expired.
const (
	PhasePrepared Phase = "prepared"
	PhaseActive   Phase = "active"
	PhaseRetired  Phase = "retired"
	PhaseDropped  Phase = "dropped"
)

// AuthorityPhase is an authority's phase at some time.
type AuthorityPhase struct {
	AuthorityRecord
	Phase Phase `json:"phase"`
	// RetiredAt and DropAt are set for retired and dropped authorities.
	RetiredAt time.Time `json:"retiredAt,omitzero"`
	DropAt    time.Time `json:"dropAt,omitzero"`
}

// Phases derives every authority's phase at now from the activation times alone, so the control
// plane and the CLI agree without either writing the transitions down. The active authority is
// the one activated most recently; an authority is retired when its successor activates.
func (s *State) Phases(now time.Time) ([]AuthorityPhase, error) {
	order := make([]int, len(s.Authorities))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return s.Authorities[a].ActivateAt.Compare(s.Authorities[b].ActivateAt)
	})
	active := -1
	for pos, i := range order {
		if !s.Authorities[i].ActivateAt.After(now) {
			active = pos
		}
	}
	if active < 0 {
		return nil, errors.New("ca: no authority is active yet (state.json has only future activation times)")
	}
	out := make([]AuthorityPhase, len(s.Authorities))
	for pos, i := range order {
		p := AuthorityPhase{AuthorityRecord: s.Authorities[i]}
		switch {
		case pos == active:
			p.Phase = PhaseActive
		case pos > active:
			p.Phase = PhasePrepared
		default:
			p.RetiredAt = s.Authorities[order[pos+1]].ActivateAt
			p.DropAt = p.RetiredAt.Add(s.MaxSVIDTTL() + DropGrace)
			p.Phase = PhaseRetired
			if !now.Before(p.DropAt) {
				p.Phase = PhaseDropped
			}
		}
		out[i] = p
	}
	return out, nil
}

func caDir(dataDir string) string { return filepath.Join(dataDir, DirName) }

func authorityDir(dataDir, id string) string { return filepath.Join(caDir(dataDir), id) }

// lockState takes the CA directory's lock; every read-modify-write of its files holds it, so
// "portcullis ca rotate" and a running control plane never interleave.
func lockState(dataDir string) (*securefile.Lock, error) {
	if err := securefile.EnsureDir(caDir(dataDir), securefile.DirMode); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	l, err := securefile.Acquire(filepath.Join(caDir(dataDir), lockFile))
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return l, nil
}

// Lock takes the CA directory's lock in dataDir, as the CLI's commands and the running CA do
// for every read-modify-write of its files; a process that writes them from elsewhere (the
// Kubernetes mirror) takes it too. Release it when done.
func Lock(dataDir string) (*securefile.Lock, error) { return lockState(dataDir) }

// ErrNoCA means the data directory has no CA yet: the control plane creates it on first start.
var ErrNoCA = errors.New("ca: no CA in the data directory yet (the control plane creates it when it first loads a valid mesh)")

// ReadState reads the state file; ErrNoCA when there is none.
func ReadState(dataDir string) (*State, error) {
	data, err := securefile.ReadPrivate(filepath.Join(caDir(dataDir), StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoCA
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("ca: %s: %w", StateFile, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("ca: %s: version %d, this build reads version %d", StateFile, s.Version, stateVersion)
	}
	if len(s.Authorities) == 0 {
		return nil, fmt.Errorf("ca: %s lists no authorities", StateFile)
	}
	for _, a := range s.Authorities {
		if a.ID == "" || filepath.Base(a.ID) != a.ID || a.ID[0] == '.' {
			return nil, fmt.Errorf("ca: %s: invalid authority id %q", StateFile, a.ID)
		}
	}
	return &s, nil
}

func writeState(dataDir string, s *State) error {
	s.Version = stateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := securefile.WriteAtomic(filepath.Join(caDir(dataDir), StateFile), append(data, '\n')); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// newAuthorityID is sortable by creation time and unique.
func newAuthorityID(now time.Time) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:]), nil
}

// activeRecord returns the active authority's record.
func activeRecord(phases []AuthorityPhase) AuthorityPhase {
	for _, p := range phases {
		if p.Phase == PhaseActive {
			return p
		}
	}
	return AuthorityPhase{} // Phases guarantees one
}

// sortedPhases returns phases ordered by activation, newest last, for display.
func sortedPhases(phases []AuthorityPhase) []AuthorityPhase {
	out := slices.Clone(phases)
	slices.SortStableFunc(out, func(a, b AuthorityPhase) int {
		return cmp.Or(a.ActivateAt.Compare(b.ActivateAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}
