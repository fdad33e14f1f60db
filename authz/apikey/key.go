package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/portcullis/portcullis/xds/model"
)

// Prefix starts every key, so scanners (and people) recognise a leaked one.
const Prefix = "pck_"

// SecretBytes is the entropy of a key's secret.
const SecretBytes = 32

// secretLen is the length of the secret's text: 32 bytes in unpadded base64url.
var secretLen = base64.RawURLEncoding.EncodedLen(SecretBytes)

// MaxKeyLen is the longest key text: prefix, a 63-character id, "_", secret. Longer values are
// refused unread.
var MaxKeyLen = len(Prefix) + 63 + 1 + secretLen

// ErrMalformed is a value that is not a key. It never quotes the value.
var ErrMalformed = errors.New("apikey: not a key (want pck_<id>_<43 base64url characters>)")

// Generate returns a new key with the given id and the hash a provider stores for it. The key
// is shown to its holder once; only the hash is kept.
func Generate(id string) (key, hash string, err error) {
	secret := make([]byte, SecretBytes)
	salt := make([]byte, model.APIKeySaltBytes)
	if _, err := rand.Read(secret); err != nil {
		return "", "", fmt.Errorf("apikey: generating a secret: %w", err)
	}
	if _, err := rand.Read(salt); err != nil {
		return "", "", fmt.Errorf("apikey: generating a salt: %w", err)
	}
	if !isDNSLabel(id) {
		return "", "", fmt.Errorf("apikey: key id %q: must be a DNS label", id)
	}
	text := base64.RawURLEncoding.EncodeToString(secret)
	return Prefix + id + "_" + text, model.FormatAPIKeyHash(salt, digest(salt, text)), nil
}

// Parse splits a key into its id and its secret's text. The id is a DNS label, which has no
// "_", so the key splits unambiguously although the secret's alphabet includes "_".
func Parse(key string) (id, secret string, err error) {
	if len(key) > MaxKeyLen || len(key) < len(Prefix)+2+secretLen || !strings.HasPrefix(key, Prefix) {
		return "", "", ErrMalformed
	}
	rest := key[len(Prefix):]
	id, secret = rest[:len(rest)-secretLen-1], rest[len(rest)-secretLen:]
	if rest[len(id)] != '_' || !isDNSLabel(id) {
		return "", "", ErrMalformed
	}
	if b, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil || len(b) != SecretBytes {
		return "", "", ErrMalformed
	}
	return id, secret, nil
}

// Matches reports, in time independent of where they differ, whether a secret's text hashes
// to the digest with the salt.
func Matches(salt, want []byte, secret string) bool {
	return subtle.ConstantTimeCompare(digest(salt, secret), want) == 1
}

func digest(salt []byte, secret string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// isDNSLabel is model's DNS label rule, without a regular expression on the request path.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
