// Package certpb is the generated Go code of cert.proto, the control plane's certificate
// service. Regenerate with `make proto`; the generated files are committed so building and
// testing need no protoc.
package certpb
