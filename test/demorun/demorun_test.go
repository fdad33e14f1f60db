package demorun

import (
	"testing"
	"time"
)

// TestDemo runs `make demo`, every command it prints as printed, then reads the denied
// request's trace in a browser, and stops the demo with SIGINT sent to make alone (which make
// does not pass on; the demo sees it in make's signal handlers).
func TestDemo(t *testing.T) {
	root := requireTools(t)
	start := time.Now()
	d := startDemo(t, root)
	t.Logf("make demo up after %s", time.Since(start).Round(time.Millisecond))
	outs := runPrinted(t, root, printedCommands(t, d.output()))
	t.Run("browser", func(t *testing.T) {
		start := time.Now()
		readDenied(t, outs["denied"])
		t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
	})
	stopDemo(t, d, false)
}
