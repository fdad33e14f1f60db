//go:build agentonly

package main

import "github.com/spf13/cobra"

// commands of the sidecar build (make build: bin/portcullis-agent): the agent, and the
// redirection its pod's init container installs (the proxy image serves both). Leaving out
// the control plane's packages (OPA, client-go, the CA) keeps their package initialisation and
// binary pages out of every pod's memory.
func commands(g *globals) []*cobra.Command {
	return []*cobra.Command{newAgentCommand(g), newInitIPTablesCommand(g)}
}
