package demorun

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopDemo sends SIGINT to make alone, or to make's whole process group (what Ctrl-C in a
// terminal does), and checks that make and every process the demo started exit promptly and
// that the demo says it stopped. Envoy must run without hot restart, which is what made it
// leave a shared memory file in /dev/shm per run (other tests on the machine start Envoys too,
// so /dev/shm itself cannot tell whose a file is).
func stopDemo(t *testing.T, d *demo, group bool) {
	t.Helper()
	procs := descendants(d.cmd.Process.Pid)
	if len(procs) < 6 { // the demo, two agents, two Envoys, Jaeger
		t.Fatalf("only %d processes under make: %v", len(procs), procs)
	}
	envoys := 0
	for _, p := range procs {
		args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if err != nil || !strings.HasSuffix(strings.Split(string(args), "\x00")[0], "envoy") {
			continue
		}
		envoys++
		if !strings.Contains(string(args), "\x00--disable-hot-restart\x00") {
			t.Errorf("Envoy %d runs with hot restart (shared memory in /dev/shm): %q", p, args)
		}
	}
	if envoys != 2 {
		t.Errorf("%d Envoys under make demo, want 2", envoys)
	}
	pid := d.cmd.Process.Pid
	if group {
		pid = -pid
	}
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("make demo still running 30 s after SIGINT (group %v):\n%s", group, d.output())
	}
	t.Logf("SIGINT (group %v): make exited after %s", group, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(d.output(), "Demo stopped.") {
		t.Errorf("the demo did not say it stopped:\n%s", d.output())
	}
	if !group && !strings.Contains(d.output(), "got SIGINT") {
		t.Errorf("the demo did not say make got SIGINT:\n%s", d.output())
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range procs {
		for syscall.Kill(p, 0) == nil {
			if time.Now().After(deadline) {
				t.Errorf("process %d the demo started is still running after make exited", p)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Ctrl-C in a terminal signals make's whole process group.
func TestDemoStopsOnCtrlC(t *testing.T) {
	stopDemo(t, startDemo(t, requireTools(t)), true)
}
