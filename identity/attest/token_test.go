package attest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testID  = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	testPin = "sha256:" + strings.Repeat("ab", 32)
	t0      = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func create(t testing.TB, key ed25519.PrivateKey, ttl time.Duration) string {
	t.Helper()
	s, _, err := Create(key, Request{SPIFFEID: testID, Service: "web", TTL: ttl, Pins: []string{testPin}, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateAndVerify(t *testing.T) {
	key := newKey(t)
	s := create(t, key, time.Hour)
	if !strings.HasPrefix(s, "ptk1.") || len(s) > 600 {
		t.Errorf("token %q", s)
	}
	v := NewVerifier(func() time.Time { return t0.Add(59 * time.Minute) }, key.Public().(ed25519.PublicKey))
	tok, err := v.Verify(s)
	if err != nil {
		t.Fatal(err)
	}
	if tok.SPIFFEID != testID || tok.Service != "web" || !tok.Expires.Equal(t0.Add(time.Hour)) || tok.Pins[0] != testPin || len(tok.ID) != 32 {
		t.Errorf("token = %+v", tok)
	}
	other := create(t, key, time.Hour)
	if o, _ := Parse(other); o.ID == tok.ID {
		t.Error("two tokens share an id")
	}
}

func TestVerifyRefusals(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	s := create(t, key, time.Hour)
	parts := strings.Split(s, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	// Another subject, same signature: a forgery.
	forgedClaims := strings.Replace(string(claims), "sa/web", "sa/adm", 1)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forgedClaims)) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	v := NewVerifier(func() time.Time { return t0.Add(time.Minute) }, pub)
	for name, tc := range map[string]struct {
		token string
		v     *Verifier
		want  error
	}{
		"expired":         {s, NewVerifier(func() time.Time { return t0.Add(time.Hour) }, pub), ErrTokenExpired},
		"other key":       {create(t, newKey(t), time.Hour), v, ErrTokenForged},
		"edited claims":   {forged, v, ErrTokenForged},
		"edited sig":      {badSig, v, ErrTokenForged},
		"empty":           {"", v, ErrTokenMalformed},
		"wrong version":   {"ptk2." + parts[1] + "." + parts[2], v, ErrTokenMalformed},
		"two parts":       {parts[0] + "." + parts[1], v, ErrTokenMalformed},
		"padded base64":   {parts[0] + "." + parts[1] + "=." + parts[2], v, ErrTokenMalformed},
		"short signature": {parts[0] + "." + parts[1] + ".AAAA", v, ErrTokenMalformed},
		"huge":            {strings.Repeat("a", MaxTokenBytes+1), v, ErrTokenMalformed},
	} {
		if _, err := tc.v.Verify(tc.token); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
}

func TestParseChecksClaims(t *testing.T) {
	key := newKey(t)
	for name, claims := range map[string]string{
		"unknown field":   `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","iat":1,"exp":2,"pins":["` + testPin + `"],"admin":true}`,
		"no pins":         `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","iat":1,"exp":2,"pins":[]}`,
		"bad pin":         `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","iat":1,"exp":2,"pins":["md5:00"]}`,
		"trust domain":    `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org","iat":1,"exp":2,"pins":["` + testPin + `"]}`,
		"not spiffe":      `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"https://example.org/x","iat":1,"exp":2,"pins":["` + testPin + `"]}`,
		"exp before iat":  `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","iat":5,"exp":2,"pins":["` + testPin + `"]}`,
		"too long-lived":  `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","iat":1,"exp":99999999,"pins":["` + testPin + `"]}`,
		"short jti":       `{"kid":"0011223344556677","jti":"0011","sub":"spiffe://example.org/ns/a/sa/b","iat":1,"exp":2,"pins":["` + testPin + `"]}`,
		"trailing data":   `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","iat":1,"exp":2,"pins":["` + testPin + `"]}{}`,
		"service not dns": `{"kid":"0011223344556677","jti":"00112233445566778899aabbccddeeff","sub":"spiffe://example.org/ns/a/sa/b","svc":"A B","iat":1,"exp":2,"pins":["` + testPin + `"]}`,
	} {
		signed := TokenPrefix + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
		s := signed + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(signed)))
		if _, err := Parse(s); !errors.Is(err, ErrTokenMalformed) {
			t.Errorf("%s: err = %v, want ErrTokenMalformed", name, err)
		}
	}
}

func TestCreateBounds(t *testing.T) {
	key := newKey(t)
	for _, ttl := range []time.Duration{MaxTokenTTL + time.Second, time.Millisecond} {
		if _, _, err := Create(key, Request{SPIFFEID: testID, TTL: ttl, Pins: []string{testPin}, Now: t0}); err == nil {
			t.Errorf("TTL %s accepted", ttl)
		}
	}
	if _, _, err := Create(key, Request{SPIFFEID: testID, Now: t0}); err == nil {
		t.Error("token without pins created")
	}
}

// FuzzParse: arbitrary input never panics; an accepted token's claims meet every check, and
// re-verification with a random key never succeeds.
func FuzzParse(f *testing.F) {
	key := newKey(f)
	f.Add(create(f, key, time.Hour))
	f.Add("ptk1..")
	f.Add("ptk1.e30.AAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("error %v is not ErrTokenMalformed", err)
			}
			return
		}
		if tok.SPIFFEID.IsZero() || len(tok.Pins) == 0 || !tok.Expires.After(tok.Issued) {
			t.Fatalf("accepted token breaks invariants: %+v", tok)
		}
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		if _, err := NewVerifier(nil, other.Public().(ed25519.PublicKey)).Verify(s); err == nil {
			t.Fatal("token verified with an unrelated key")
		}
	})
}
