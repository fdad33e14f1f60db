// Package cli holds what the operator commands of cmd/portcullis do once their flags are read:
// creating join tokens, editing API keys, reading the control plane's admin port for `portcullis proxy`, running
// the policy authoring tools. Each function writes what the user sees to the writer it is given.
package cli
