package jwt

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// minRSABits is the smallest RSA modulus accepted; smaller keys are skipped.
const minRSABits = 2048

// keySet is one fetched JWKS: the usable public signature keys, indexed by key id. Immutable.
type keySet struct {
	keys    []jose.JSONWebKey
	byKid   map[string][]int
	hash    string // content hash of the usable keys, to tell a real change from a re-fetch
	fetched time.Time
	skipped int // keys present in the document but not usable (symmetric, "use":"enc", ...)
}

// parseJWKS parses a JWKS document. Keys that cannot verify signatures with an allowed algorithm
// (symmetric keys, encryption keys, unknown types, short RSA keys) are skipped one by one rather
// than failing the whole set; a set with no usable key is an error, so it is never cached as good.
func parseJWKS(data []byte, algs []string) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS has no "keys" list`)
	}
	ks := &keySet{byKid: map[string][]int{}}
	h := sha256.New()
	for _, rawKey := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rawKey); err != nil {
			ks.skipped++
			continue
		}
		if !usable(&k, algs) {
			ks.skipped++
			continue
		}
		if !k.IsPublic() {
			// A private key published by mistake: use only its public half.
			k = k.Public()
		}
		ks.byKid[k.KeyID] = append(ks.byKid[k.KeyID], len(ks.keys))
		ks.keys = append(ks.keys, k)
		h.Write(rawKey)
	}
	if len(ks.keys) == 0 {
		return nil, fmt.Errorf("JWKS has no usable signature key for algorithms %v (%d keys skipped)", algs, ks.skipped)
	}
	ks.hash = hex.EncodeToString(h.Sum(nil))[:16]
	return ks, nil
}

// usable reports whether k is a public (or private, then used as public) signature key that
// verifies at least one of the allowed algorithms.
func usable(k *jose.JSONWebKey, algs []string) bool {
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	if k.Algorithm != "" && !slices.Contains(algs, k.Algorithm) {
		return false
	}
	for _, a := range algs {
		if keyFits(k, a) {
			return true
		}
	}
	return false
}

// keyFits reports whether k can verify signatures made with alg: the key type matches the
// algorithm family, an "alg" on the key matches, and EC curves match their algorithm.
func keyFits(k *jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return isRSA(alg) && key.N.BitLen() >= minRSABits
	case *rsa.PrivateKey:
		return isRSA(alg) && key.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		return ecFits(key.Curve, alg)
	case *ecdsa.PrivateKey:
		return ecFits(key.Curve, alg)
	case ed25519.PublicKey, ed25519.PrivateKey:
		return alg == "EdDSA"
	}
	return false // symmetric ([]byte) and anything else
}

func isRSA(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return true
	}
	return false
}

func ecFits(c elliptic.Curve, alg string) bool {
	switch alg {
	case "ES256":
		return c == elliptic.P256()
	case "ES384":
		return c == elliptic.P384()
	}
	return false
}

// candidates returns the keys that may have signed a token with this kid and alg. A token
// without a kid may be signed by any key that fits the algorithm.
func (ks *keySet) candidates(kid, alg string) []*jose.JSONWebKey {
	var out []*jose.JSONWebKey
	if kid != "" {
		for _, i := range ks.byKid[kid] {
			if keyFits(&ks.keys[i], alg) {
				out = append(out, &ks.keys[i])
			}
		}
		return out
	}
	for i := range ks.keys {
		if keyFits(&ks.keys[i], alg) {
			out = append(out, &ks.keys[i])
		}
	}
	return out
}

// keyIDs lists the key ids, for status pages.
func (ks *keySet) keyIDs() []string {
	ids := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		ids = append(ids, k.KeyID)
	}
	return ids
}
