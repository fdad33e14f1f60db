package server

import (
	"context"
	"net/netip"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
)

// TestVerifiedAttributes: an allowed request's dynamic metadata carries the values of the keys
// the route asks for, from the verified token and the client address; a denied request, or one
// whose token does not verify, carries none, so a forged token never selects a bucket.
func TestVerifiedAttributes(t *testing.T) {
	f := newFixture(t, "")
	admin := f.token(t, map[string]any{"roles": []string{"admin"}, "org": map[string]any{"tenant": "acme"}})
	forger := authztest.NewKey(t, "ES256", "k1") // the provider's key id, another key
	forged := forger.Sign(t, authztest.Claims("https://idp.test", "bob", "backend"), nil)
	const keys = "jwtClaim:0:sub,jwtClaim:0:org.tenant,jwtClaim:0:roles,jwtClaim:1:sub,clientIP:0,clientIP:1"
	withKeys := func(r *authv3.CheckRequest) { r.Attributes.ContextExtensions[model.ContextKeyRateLimit] = keys }
	cases := []struct {
		name   string
		mutate func(*authv3.CheckRequest)
		status int
		want   map[string]string // nil: no verified attributes at all
	}{
		{"verified token", all(withKeys, setPath("/admin/users"), setHeader("authorization", "Bearer "+admin)), 200, map[string]string{
			"jwtClaim:0:sub":        `jwt:"https://idp.test"alice`,
			"jwtClaim:0:org.tenant": `jwt:"https://idp.test"acme`,
			"jwtClaim:0:roles":      "ip:10.0.0.7", // a list keys nothing: the client IP instead
			"jwtClaim:1:sub":        `jwt:"https://idp.test"alice`,
			"clientIP:0":            "ip:10.0.0.7",
			"clientIP:1":            "ip:10.0.0.7",
		}},
		{"no token: the client IP", all(withKeys, setHeader("x-forwarded-for", "198.51.100.66, 203.0.113.9")), 200, map[string]string{
			"jwtClaim:0:sub":        "ip:10.0.0.7",
			"jwtClaim:0:org.tenant": "ip:10.0.0.7",
			"jwtClaim:0:roles":      "ip:10.0.0.7",
			"jwtClaim:1:sub":        "ip:203.0.113.9",
			"clientIP:0":            "ip:10.0.0.7",
			"clientIP:1":            "ip:203.0.113.9",
		}},
		{"a forged token is refused", all(withKeys, setHeader("authorization", "Bearer "+forged)), 401, nil},
		{"denied", all(withKeys, setPath("/debug/pprof")), 403, nil},
		{"no keys asked for", nil, 200, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.srv.Check(context.Background(), request(t, tc.mutate))
			if err != nil {
				t.Fatal(err)
			}
			if got := httpCode(resp); got != tc.status {
				t.Fatalf("status %d, want %d\n%s", got, tc.status, describe(resp))
			}
			v, ok := resp.GetDynamicMetadata().GetFields()[model.MetadataVerified]
			if tc.want == nil {
				if ok {
					t.Fatalf("verified attributes %v, want none", v)
				}
				return
			}
			got := map[string]string{}
			for k, x := range v.GetStructValue().GetFields() {
				got[k] = x.GetStringValue()
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d attributes %v, want %v", len(got), got, tc.want)
			}
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
		})
	}
}

// TestClientIP: with no trusted hop X-Forwarded-For is ignored; with N, the entry N from the right,
// so addresses a client writes in front never count.
func TestClientIP(t *testing.T) {
	peer := netip.MustParseAddr("10.0.0.7")
	cases := []struct {
		xff  string
		hops uint32
		want string
	}{
		{"", 0, "10.0.0.7"},
		{"203.0.113.9", 0, "10.0.0.7"},
		{"", 1, "10.0.0.7"},
		{"203.0.113.9", 1, "203.0.113.9"},
		{"198.51.100.66, 203.0.113.9", 1, "203.0.113.9"}, // the client's own entry in front is ignored
		{"198.51.100.66,203.0.113.9,192.0.2.1", 2, "203.0.113.9"},
		{"203.0.113.9", 2, "10.0.0.7"}, // fewer entries than hops: the peer
		{"not-an-ip", 1, "10.0.0.7"},
		{"[2001:db8::1]:443", 1, "10.0.0.7"}, // an entry with a port is not an address
		{"192.0.2.1, 2001:db8::1", 1, "2001:db8::1"},
		{"::ffff:203.0.113.9", 1, "203.0.113.9"},
		{"fe80::1%eth0", 1, "10.0.0.7"},
	}
	for _, tc := range cases {
		if got := clientIP(peer, tc.xff, tc.hops); got.String() != tc.want {
			t.Errorf("clientIP(%q, %d) = %s, want %s", tc.xff, tc.hops, got, tc.want)
		}
	}
	if got := clientIP(netip.Addr{}, "", 0); got.IsValid() {
		t.Errorf("no peer address: %s, want none", got)
	}
}
