// Command portcullis is the Portcullis service mesh: control plane, agent, authorization service
// and authoring tools in one binary. Subcommands only parse flags and wire packages together.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand(version).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "portcullis:", err)
		stop()
		os.Exit(1)
	}
}
