// Package demoapp holds the demo's two applications: a backend that answers with who called it
// (the caller's SPIFFE ID, from the X-Forwarded-Client-Cert header its proxy sets) and a
// frontend that calls the backend through its own proxy's local outbound port. Neither knows
// anything about TLS or identities: the mesh does that.
package demoapp
