package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Token format: "ptk1." + base64url(JSON claims) + "." + base64url(Ed25519 signature over
// "ptk1." + base64url(JSON claims)). The version prefix is signed too, so a token can never be
// reinterpreted under a later format.
const (
	TokenPrefix = "ptk1"
	// MaxTokenBytes bounds what the parser reads; real tokens are about 400 bytes.
	MaxTokenBytes = 4 << 10
	// DefaultTokenTTL and MaxTokenTTL bound how long a token may wait to be used.
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 7 * 24 * time.Hour
	// MaxPins bounds the pins in one token (one per root in the bundle).
	MaxPins = 8
)

// Errors a token is refused with; Verify wraps them with detail.
var (
	ErrTokenMalformed = errors.New("attest: malformed join token")
	ErrTokenForged    = errors.New("attest: join token signature invalid or signing key unknown")
	ErrTokenExpired   = errors.New("attest: join token expired")
	ErrTokenReused    = errors.New("attest: join token already used")
)

// Claims are a token's signed contents.
type Claims struct {
	// KeyID names the signing key: the first 8 bytes of SHA-256 of its public key, in hex.
	KeyID string `json:"kid"`
	// ID is the token's unique id (128 random bits, hex): the unit of single use.
	ID string `json:"jti"`
	// Subject is the SPIFFE ID the token may obtain an SVID for, and nothing else.
	Subject string `json:"sub"`
	// Service is the mesh service the workload belongs to, for the agent's own use.
	Service   string `json:"svc,omitempty"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	// Pins are "sha256:<hex>" of the SubjectPublicKeyInfo of each trust bundle root.
	Pins []string `json:"pins"`
}

// Token is a parsed token.
type Token struct {
	Claims
	SPIFFEID spiffeid.ID
	Issued   time.Time
	Expires  time.Time
	// signed is the part the signature covers; sig is the signature.
	signed, sig []byte
}

var (
	hexID     = regexp.MustCompile(`^[0-9a-f]{32}$`)
	hexKeyID  = regexp.MustCompile(`^[0-9a-f]{16}$`)
	pinFormat = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	dnsLabel  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	b64       = base64.RawURLEncoding.Strict()
)

// Parse checks a token's structure and claims without verifying its signature. The agent uses
// it to learn its SPIFFE ID and the pins; the control plane uses Verifier.Verify.
func Parse(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrTokenMalformed, MaxTokenBytes)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != TokenPrefix {
		return nil, fmt.Errorf("%w: want %s.<claims>.<signature>", ErrTokenMalformed, TokenPrefix)
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is not %d bytes of base64url", ErrTokenMalformed, ed25519.SignatureSize)
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the claims", ErrTokenMalformed)
	}
	t := &Token{Claims: c, signed: []byte(parts[0] + "." + parts[1]), sig: sig}
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	return t, nil
}

func (t *Token) check() error {
	if !hexKeyID.MatchString(t.KeyID) {
		return errors.New("kid must be 16 hex digits")
	}
	if !hexID.MatchString(t.ID) {
		return errors.New("jti must be 32 hex digits")
	}
	id, err := spiffeid.FromString(t.Subject)
	if err != nil {
		return fmt.Errorf("sub: %v", err)
	}
	if id.Path() == "" {
		return errors.New("sub names a trust domain, not a workload")
	}
	t.SPIFFEID = id
	if t.Service != "" && !dnsLabel.MatchString(t.Service) {
		return errors.New("svc must be a DNS label")
	}
	if t.IssuedAt <= 0 || t.ExpiresAt <= t.IssuedAt || t.ExpiresAt-t.IssuedAt > int64(MaxTokenTTL/time.Second) {
		return fmt.Errorf("iat/exp: want 0 < iat < exp <= iat+%s", MaxTokenTTL)
	}
	t.Issued, t.Expires = time.Unix(t.IssuedAt, 0), time.Unix(t.ExpiresAt, 0)
	if len(t.Pins) == 0 || len(t.Pins) > MaxPins {
		return fmt.Errorf("pins: want 1 to %d", MaxPins)
	}
	for _, p := range t.Pins {
		if !pinFormat.MatchString(p) {
			return fmt.Errorf("pin %q: want sha256:<64 hex digits>", p)
		}
	}
	return nil
}

// CheckTokenID refuses anything but a token id as Create makes them (32 hex digits), before a
// used-token store records it.
func CheckTokenID(id string) error {
	if !hexID.MatchString(id) {
		return fmt.Errorf("%w: token id %q", ErrTokenMalformed, id)
	}
	return nil
}

// KeyID returns the id of an Ed25519 public key as tokens name it.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Request describes a token to create.
type Request struct {
	SPIFFEID spiffeid.ID
	Service  string
	TTL      time.Duration
	Pins     []string
	Now      time.Time
}

// Create signs a new token.
func Create(key ed25519.PrivateKey, r Request) (string, *Token, error) {
	if r.TTL <= 0 {
		r.TTL = DefaultTokenTTL
	}
	if r.TTL > MaxTokenTTL {
		return "", nil, fmt.Errorf("attest: token TTL %s is longer than the %s allowed", r.TTL, MaxTokenTTL)
	}
	if r.TTL < time.Second {
		return "", nil, fmt.Errorf("attest: token TTL %s is shorter than a second", r.TTL)
	}
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", nil, fmt.Errorf("attest: %w", err)
	}
	c := Claims{
		KeyID:     KeyID(key.Public().(ed25519.PublicKey)),
		ID:        hex.EncodeToString(jti[:]),
		Subject:   r.SPIFFEID.String(),
		Service:   r.Service,
		IssuedAt:  r.Now.Unix(),
		ExpiresAt: r.Now.Add(r.TTL).Unix(),
		Pins:      r.Pins,
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", nil, fmt.Errorf("attest: %w", err)
	}
	signed := TokenPrefix + "." + b64.EncodeToString(payload)
	s := signed + "." + b64.EncodeToString(ed25519.Sign(key, []byte(signed)))
	t, err := Parse(s) // the same checks as every reader, so no invalid token leaves here
	if err != nil {
		return "", nil, fmt.Errorf("attest: creating token: %w", err)
	}
	return s, t, nil
}

// Verifier checks tokens against the control plane's signing keys.
type Verifier struct {
	keys  map[string]ed25519.PublicKey
	clock func() time.Time
}

// NewVerifier returns a verifier for tokens signed by any of keys; clock is time.Now when nil.
func NewVerifier(clock func() time.Time, keys ...ed25519.PublicKey) *Verifier {
	if clock == nil {
		clock = time.Now
	}
	v := &Verifier{keys: map[string]ed25519.PublicKey{}, clock: clock}
	for _, k := range keys {
		v.keys[KeyID(k)] = k
	}
	return v
}

// Verify parses s and checks its signature and expiry. It does not check single use: that is
// the UsedTokens store's job, once the rest of the request has been checked too.
func (v *Verifier) Verify(s string) (*Token, error) {
	t, err := Parse(s)
	if err != nil {
		return nil, err
	}
	key, ok := v.keys[t.KeyID]
	if !ok || !ed25519.Verify(key, t.signed, t.sig) {
		return nil, fmt.Errorf("%w (token id %s)", ErrTokenForged, t.ID)
	}
	if now := v.clock(); !now.Before(t.Expires) {
		return nil, fmt.Errorf("%w at %s (token id %s)", ErrTokenExpired, t.Expires.UTC().Format(time.RFC3339), t.ID)
	}
	return t, nil
}
