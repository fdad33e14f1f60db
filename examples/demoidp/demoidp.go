package demoidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is the demo issuer's name, as the demo's JWTProvider documents expect it.
const Issuer = "https://idp.demo.portcullis.local"

// keyID names the demo key in its key set.
const keyID = "demo-1"

// IDP signs the demo's tokens.
type IDP struct {
	key *ecdsa.PrivateKey
}

// New makes a new signing key.
func New() (*IDP, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("demoidp: %w", err)
	}
	return &IDP{key: key}, nil
}

// JWKS is the public key set, for a JWTProvider's jwks (file or inline).
func (d *IDP) JWKS() ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: d.key.Public(), KeyID: keyID, Algorithm: string(jose.ES256), Use: "sig"}}}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("demoidp: %w", err)
	}
	return b, nil
}

// Token is a token for sub with the given realm roles (as Keycloak puts them), audience
// "backend", valid for ttl.
func (d *IDP) Token(sub string, roles []string, ttl time.Duration) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: d.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", keyID))
	if err != nil {
		return "", fmt.Errorf("demoidp: %w", err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": Issuer, "sub": sub, "aud": "backend",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"realm_access": map[string]any{"roles": roles},
	}
	return josejwt.Signed(signer).Claims(claims).Serialize()
}
