//go:build !agentonly

package main

import "github.com/spf13/cobra"

// commands are the subcommands of the full binary.
func commands(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newControlPlaneCommand(g),
		newAuthzCommand(g),
		newPolicyCommand(g),
		newDemoCommand(g),
		newAgentCommand(g),
		newProxyCommand(g),
		newTokenCommand(g),
		newRevokeCommand(g),
		newAPIKeyCommand(g),
		newCACommand(g),
		newInitIPTablesCommand(g),
		newInstallCommand(g),
		newDemoAppCommand(g),
	}
}
