package jwt

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/portcullis/portcullis/xds/model"
)

// EnvoyJWKS is a provider's key set as Envoy's jwt_authn filter is given it (inline, in the
// filter's configuration) when Envoy verifies the provider's tokens itself (engine auto). It is
// only given for keys known when the configuration is built, which today are inline keys: keys
// from a file, a URL or discovery change between translations, and stay with the authorization
// service, which refreshes them.
func EnvoyJWKS(doc *model.JWTProviderDoc) (string, error) {
	s := &doc.Spec
	if s.JWKS.Inline == "" {
		return "", errors.New("its keys come from a file, a URL or discovery, which only the authorization service refreshes")
	}
	algs := s.Algorithms
	if len(algs) == 0 {
		algs = []string{"RS256", "ES256"}
	}
	return envoyKeys([]byte(s.JWKS.Inline), algs)
}

// envoyKeys rewrites a JWKS so that Envoy accepts exactly the signatures Verify accepts. Envoy
// tries every key whose kid and "alg" match the token's (a key without either matches any), where
// Verify takes only the usable keys (parseJWKS), only for an allowed algorithm that fits them
// (keyFits), and at most maxKeyAttempts of them. So each usable key is written once per allowed
// algorithm it fits, with that "alg" and its public half only; a key without a kid, which Envoy
// would try for tokens naming another kid, and more than maxKeyAttempts keys for one algorithm are
// refused.
func envoyKeys(data []byte, algs []string) (string, error) {
	ks, err := parseJWKS(data, algs)
	if err != nil {
		return "", err
	}
	out := struct {
		Keys []jose.JSONWebKey `json:"keys"`
	}{Keys: []jose.JSONWebKey{}}
	perAlg := map[string]int{}
	for _, k := range ks.keys {
		if k.KeyID == "" {
			return "", errors.New(`a key has no "kid": Envoy would try it for tokens naming any key`)
		}
		for _, alg := range algs {
			if !keyFits(&k, alg) {
				continue
			}
			if perAlg[alg]++; perAlg[alg] > maxKeyAttempts {
				return "", fmt.Errorf("more than %d keys verify %s", maxKeyAttempts, alg)
			}
			e := k.Public()
			e.Algorithm, e.Use = alg, "sig"
			out.Keys = append(out.Keys, e)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("writing the key set: %w", err)
	}
	return string(b), nil
}
