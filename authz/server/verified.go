package server

import (
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// verifiedAttributes returns the values of the verified attributes a route's rate limits key on
// (keys: the model.ContextKeyRateLimit context extension, model.VerifiedKey texts separated by
// commas), for the dynamic metadata of an allowed request: Envoy's rate limit descriptors read
// them there, so a bucket is chosen by what this service verified and never by a header a client
// wrote. A key without a value (no client address) is left out, and its limit does not count the
// request.
func verifiedAttributes(keys string, a *policy.Attributes) *structpb.Value {
	fields := make(map[string]*structpb.Value, strings.Count(keys, ",")+1)
	for keys != "" {
		var text string
		text, keys, _ = strings.Cut(keys, ",")
		k, err := model.ParseVerifiedKey(text)
		if err != nil {
			continue // the translator writes these; nothing a request can change
		}
		if v := verifiedValue(k, a); v != "" {
			fields[text] = structpb.NewStringValue(v)
		}
	}
	return structpb.NewStructValue(&structpb.Struct{Fields: fields})
}

// verifiedValue is one key's value: "jwt:<quoted issuer><claim>" for a claim of the verified token
// (the issuer is part of it: a subject is unique only within its issuer), "apikey:<quoted
// provider><identity>" for the identity of the verified API key (likewise unique only within its
// provider), else "ip:<address>", the client IP — what jwtClaim and apiKey keys fall back to for
// requests without the verified credential.
func verifiedValue(k model.VerifiedKey, a *policy.Attributes) string {
	switch {
	case k.Kind == model.VerifiedJWTClaim && a.JWT != nil:
		if v, ok := a.JWT.Claims.Get(k.Arg); ok && !v.List && len(v.Values) == 1 {
			return "jwt:" + strconv.Quote(a.JWT.Issuer) + v.Values[0]
		}
	case k.Kind == model.VerifiedAPIKey && a.APIKey != nil:
		return "apikey:" + strconv.Quote(a.APIKey.Provider) + a.APIKey.Identity
	}
	// X-Forwarded-For sent on several lines is one list, the lines in order (RFC 9110 5.3).
	ip := clientIP(a.Source.Address, strings.Join(a.Request.Headers["x-forwarded-for"], ","), k.Hops)
	if !ip.IsValid() {
		return ""
	}
	return "ip:" + ip.String()
}

// clientIP is the client's address behind hops trusted proxies: the connection's peer when hops
// is 0 (X-Forwarded-For is ignored: anyone can write it); else the entry hops places from the
// right of X-Forwarded-For — the address the farthest trusted proxy appended. The inbound proxy
// passes the header on as the peer sent it (skip_xff_append). With fewer entries, or an entry
// that is not an IP address, the peer.
func clientIP(peer netip.Addr, xff string, hops uint32) netip.Addr {
	peer = peer.Unmap()
	if hops == 0 || xff == "" {
		return peer
	}
	entries := strings.Split(xff, ",")
	if int(hops) > len(entries) {
		return peer
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(entries[len(entries)-int(hops)]))
	if err != nil || addr.Zone() != "" {
		return peer
	}
	return addr.Unmap()
}
