package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/securefile"
)

// Revocation is one entry of the revocation list: one SVID by serial number, or every SVID of a
// SPIFFE ID issued up to RevokedAt, to the second (the workload can join again with a new token
// from the next second on).
type Revocation struct {
	// Serial is lowercase hex without separators.
	Serial    string    `json:"serial,omitempty"`
	SPIFFEID  string    `json:"spiffeID,omitempty"`
	RevokedAt time.Time `json:"revokedAt"`
	// KeepUntil is when every SVID the entry could match has expired; the entry is pruned then.
	KeepUntil time.Time `json:"keepUntil"`
	Note      string    `json:"note,omitempty"`
}

type revocationFile struct {
	Version int          `json:"version"`
	Entries []Revocation `json:"entries"`
}

// ParseSerial parses a serial number written in hex, with or without a 0x prefix or colons
// (the forms openssl and Envoy's /certs print).
func ParseSerial(s string) (*big.Int, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	h = strings.TrimPrefix(h, "0x")
	if h == "" || len(h) > 64 {
		return nil, fmt.Errorf("ca: serial %q: want up to 32 bytes of hex", s)
	}
	if len(h)%2 == 1 {
		h = "0" + h
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("ca: serial %q: %w", s, err)
	}
	return new(big.Int).SetBytes(b), nil
}

// Revoke adds an entry to the data directory's revocation list (pruning expired ones); a
// running control plane picks it up within its reload interval. Exactly one of serial and id.
func Revoke(dataDir string, serial *big.Int, id spiffeid.ID, note string, now time.Time) (Revocation, error) {
	if (serial == nil) == id.IsZero() {
		return Revocation{}, errors.New("ca: revoke one serial number or one SPIFFE ID")
	}
	lock, err := lockState(dataDir)
	if err != nil {
		return Revocation{}, err
	}
	defer func() { _ = lock.Release() }()
	st, err := ReadState(dataDir)
	if err != nil {
		return Revocation{}, err
	}
	if !id.IsZero() && id.TrustDomain().Name() != st.TrustDomain {
		return Revocation{}, fmt.Errorf("ca: %s is not in the CA's trust domain %q", id, st.TrustDomain)
	}
	f, err := readRevocations(dataDir)
	if err != nil {
		return Revocation{}, err
	}
	r := Revocation{RevokedAt: now.UTC(), KeepUntil: now.Add(st.MaxSVIDTTL() + DropGrace).UTC(), Note: note}
	if serial != nil {
		r.Serial = serial.Text(16)
	} else {
		r.SPIFFEID = id.String()
	}
	kept := f.Entries[:0]
	for _, e := range f.Entries {
		if now.Before(e.KeepUntil) {
			kept = append(kept, e)
		}
	}
	f.Entries = append(kept, r)
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return Revocation{}, fmt.Errorf("ca: %w", err)
	}
	if err := securefile.WriteAtomic(filepath.Join(caDir(dataDir), RevokedFile), append(data, '\n')); err != nil {
		return Revocation{}, fmt.Errorf("ca: %w", err)
	}
	return r, nil
}

func readRevocations(dataDir string) (*revocationFile, error) {
	data, err := securefile.ReadPrivate(filepath.Join(caDir(dataDir), RevokedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &revocationFile{Version: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var f revocationFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("ca: %s: %w", RevokedFile, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("ca: %s: version %d, this build reads version 1", RevokedFile, f.Version)
	}
	return &f, nil
}

// revocations is the loaded list, immutable; nil is the empty list.
type revocations struct {
	serials map[string]time.Time      // hex serial → keepUntil
	ids     map[spiffeid.ID]time.Time // SPIFFE ID → revokedAt (latest)
}

// lookup indexes the file's entries by serial and by SPIFFE ID.
func (f *revocationFile) lookup() (*revocations, error) {
	r := &revocations{serials: map[string]time.Time{}, ids: map[spiffeid.ID]time.Time{}}
	for _, e := range f.Entries {
		switch {
		case e.Serial != "":
			n, err := ParseSerial(e.Serial)
			if err != nil {
				return nil, err
			}
			r.serials[n.Text(16)] = e.KeepUntil
		case e.SPIFFEID != "":
			id, err := spiffeid.FromString(e.SPIFFEID)
			if err != nil {
				return nil, fmt.Errorf("ca: %s: %w", RevokedFile, err)
			}
			if e.RevokedAt.After(r.ids[id]) {
				r.ids[id] = e.RevokedAt
			}
		}
	}
	return r, nil
}

// serial reports whether the SVID with this serial number was revoked by serial.
func (r *revocations) serial(serial *big.Int) bool {
	if r == nil || serial == nil {
		return false
	}
	_, ok := r.serials[serial.Text(16)]
	return ok
}

// cert reports whether an SVID was revoked, by its serial number or by its SPIFFE ID (every SVID
// of the ID issued up to the revocation).
func (r *revocations) cert(cert *x509.Certificate) bool {
	if r.serial(cert.SerialNumber) {
		return true
	}
	if r == nil || len(r.ids) == 0 || len(cert.URIs) != 1 {
		return false
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return false
	}
	at, ok := r.ids[id]
	// NotBefore is the issuance time minus Backdate, to the second: an SVID issued in the same
	// second as the revocation counts as revoked (failing closed).
	return ok && !cert.NotBefore.Add(Backdate).After(at.Truncate(time.Second))
}
