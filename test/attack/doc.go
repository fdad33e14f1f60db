// Package attack is the standing attack suite: the mesh attacked from outside, as issue 15 did,
// with its own binaries, real Envoys and real processes wherever the attack is on the wire.
// Every class of attack that was found to work (and was fixed) and every class that held is an
// entry; the suite prints one line per attack — the attack, what must happen, what happened —
// and fails if any did not hold. `make test` runs it on its own after the other packages.
//
// The attacker holds what a compromised workload holds: the frontend's SVID (from its agent's
// Workload API), a join token, network access to every port. It does not hold the CA's keys or
// the control plane's data directory, except where the suite plays the operator (revoking,
// creating tokens, restarting).
package attack
