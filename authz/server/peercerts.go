package server

import (
	lru "github.com/hashicorp/golang-lru/v2"
)

// Bounds of the peer-certificate cache. Its keys are what proxies send, and a proxy that is
// compromised sends what it likes: the cache holds at most peerCertEntries certificates of at
// most maxCachedPeerCert bytes each (URL-encoded PEM; a mesh SVID is about 1.2 KB), so 16 MiB
// of keys at worst, least recently used first out. Legitimate proxies send the SVIDs of the
// workloads calling them, which are far fewer, and each renews only every few hours.
const (
	peerCertEntries   = 4096
	maxCachedPeerCert = 4 << 10
)

// peerCerts remembers the SPIFFE IDs of the peer certificates Envoy sends with every Check
// (include_peer_certificate), keyed by the certificate exactly as sent. Parsing one cost
// 22 µs per Check under load (issue 16) for the same few certificates over and over. The key is
// the whole certificate, not a hash, so a hit is the same bytes and gives what parsing them
// would: the cross-check is unchanged. Only certificates that parse are kept; anything else is
// parsed (and refused) every time, as before.
type peerCerts struct {
	ids *lru.Cache[string, []string]
}

func newPeerCerts() *peerCerts {
	c, err := lru.New[string, []string](peerCertEntries)
	if err != nil {
		panic(err) // only for a size ≤ 0
	}
	return &peerCerts{ids: c}
}

// get returns the SPIFFE IDs of a certificate seen before; c may be nil (nothing cached).
func (c *peerCerts) get(encoded string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	return c.ids.Get(encoded)
}

// add remembers the SPIFFE IDs of a certificate that parsed, unless it is too large to keep.
func (c *peerCerts) add(encoded string, ids []string) {
	if c == nil || len(encoded) > maxCachedPeerCert {
		return
	}
	c.ids.Add(encoded, ids)
}

// len is the number of certificates remembered.
func (c *peerCerts) len() int { return c.ids.Len() }
