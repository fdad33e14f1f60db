// Package demo runs `portcullis demo`: a whole local mesh on loopback — the control plane (in
// process), a frontend and a backend application, each with its agent (the sidecar build, as
// its own process) and a real Envoy, and Jaeger when a binary is given — then prints what to try
// and where to look, and stops everything when its context ends.
package demo
