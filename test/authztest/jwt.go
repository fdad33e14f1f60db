// Package authztest makes what authorization tests and the load tool need, for real: signing
// keys, JWKS documents and signed tokens (written independently of the verifier's JWT library,
// so the two check each other), and a test CA issuing X.509-SVIDs.
package authztest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"math/big"
	"time"
)

// TB is the part of testing.TB the helpers use, so the load tool can use them too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Key is a signing key with its JWK id and algorithm.
type Key struct {
	ID     string
	Alg    string
	Signer crypto.Signer
}

// NewKey generates a key for alg: RS256/384/512 and PS256/384/512 (RSA 2048), ES256 (P-256),
// ES384 (P-384) or EdDSA (Ed25519).
func NewKey(t TB, alg, kid string) *Key {
	t.Helper()
	var s crypto.Signer
	var err error
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "EdDSA":
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("authztest: unsupported algorithm %q", alg)
	}
	if err != nil {
		t.Fatalf("authztest: generating %s key: %v", alg, err)
	}
	return &Key{ID: kid, Alg: alg, Signer: s}
}

// JWK returns the public key as a JWK (with kid, alg and use).
func (k *Key) JWK() map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	jwk := map[string]any{"kid": k.ID, "alg": k.Alg, "use": "sig"}
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		jwk["kty"], jwk["n"], jwk["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		jwk["kty"], jwk["crv"] = "EC", pub.Curve.Params().Name
		// The uncompressed point: 0x04, then X and Y, each size bytes.
		point, err := pub.Bytes()
		if err != nil || len(point) != 1+2*size {
			panic(fmt.Sprintf("authztest: EC public key: %v", err))
		}
		jwk["x"], jwk["y"] = b64(point[1:1+size]), b64(point[1+size:])
	case ed25519.PublicKey:
		jwk["kty"], jwk["crv"], jwk["x"] = "OKP", "Ed25519", b64(pub)
	}
	return jwk
}

// JWKS returns a JWKS JSON document holding the public keys.
func JWKS(keys ...*Key) string {
	list := make([]any, len(keys))
	for i, k := range keys {
		list[i] = k.JWK()
	}
	b, err := json.Marshal(map[string]any{"keys": list})
	if err != nil {
		return "" // cannot happen: only strings and maps
	}
	return string(b)
}

// Claims returns a typical claim set: iss, sub, aud, iat now, exp in an hour.
func Claims(iss, sub string, aud ...string) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": iss, "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if len(aud) == 1 {
		c["aud"] = aud[0]
	} else if len(aud) > 1 {
		c["aud"] = aud
	}
	return c
}

// Sign returns a compact JWS of claims signed by k, with the header alg and kid of k plus extra.
func (k *Key) Sign(t TB, claims map[string]any, extraHeader map[string]any) string {
	t.Helper()
	header := map[string]any{"alg": k.Alg, "typ": "JWT"}
	if k.ID != "" {
		header["kid"] = k.ID
	}
	for name, v := range extraHeader {
		header[name] = v
	}
	input := encodeSegment(t, header) + "." + encodeSegment(t, claims)
	sig, err := k.sign([]byte(input))
	if err != nil {
		t.Fatalf("authztest: signing: %v", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func (k *Key) sign(input []byte) ([]byte, error) {
	switch k.Alg {
	case "EdDSA":
		return k.Signer.Sign(rand.Reader, input, crypto.Hash(0))
	case "ES256", "ES384":
		h := hashFor(k.Alg)
		digest := digest(h, input)
		r, s, err := ecdsa.Sign(rand.Reader, k.Signer.(*ecdsa.PrivateKey), digest)
		if err != nil {
			return nil, err
		}
		size := (k.Signer.(*ecdsa.PrivateKey).Curve.Params().BitSize + 7) / 8
		return append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...), nil
	case "PS256", "PS384", "PS512":
		h := hashFor(k.Alg)
		return rsa.SignPSS(rand.Reader, k.Signer.(*rsa.PrivateKey), h, digest(h, input), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	default:
		h := hashFor(k.Alg)
		return rsa.SignPKCS1v15(rand.Reader, k.Signer.(*rsa.PrivateKey), h, digest(h, input))
	}
}

func hashFor(alg string) crypto.Hash {
	switch alg[2:] {
	case "384":
		return crypto.SHA384
	case "512":
		return crypto.SHA512
	}
	return crypto.SHA256
}

func digest(h crypto.Hash, input []byte) []byte {
	var hh hash.Hash
	switch h {
	case crypto.SHA384:
		hh = sha512.New384()
	case crypto.SHA512:
		hh = sha512.New()
	default:
		hh = sha256.New()
	}
	hh.Write(input)
	return hh.Sum(nil)
}

// SignHMAC returns a token "signed" with HS256 using secret: the algorithm-confusion attack when
// secret is an issuer's public key.
func SignHMAC(t TB, secret []byte, kid string, claims map[string]any) string {
	t.Helper()
	input := encodeSegment(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + encodeSegment(t, claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Unsigned returns an "alg":"none" token with an empty signature.
func Unsigned(t TB, claims map[string]any) string {
	t.Helper()
	return encodeSegment(t, map[string]any{"alg": "none", "typ": "JWT"}) + "." + encodeSegment(t, claims) + "."
}

func encodeSegment(t TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("authztest: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Segment returns v as a base64url JSON segment, for building malformed tokens.
func Segment(t TB, v any) string {
	t.Helper()
	return encodeSegment(t, v)
}
