// Package demoidp is the demo's identity provider: an ES256 key made at start, the key set a
// JWTProvider reads, and end-user tokens with the demo's claims. The local demo and the cluster
// demo (`make cluster`) use it; a key made per run means no demo key is ever committed.
package demoidp
