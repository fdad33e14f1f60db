package procstat

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCPUTimeOfThisProcess(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until /proc has counted 100ms of CPU (on a busy machine that takes longer than
	// 100ms): the reader must see it, and never more than every CPU for the whole time.
	start := time.Now()
	x := 0
	var used time.Duration
	for used < 100*time.Millisecond && time.Since(start) < 20*time.Second {
		for spin := time.Now(); time.Since(spin) < 10*time.Millisecond; {
			x++ // one busy thread
		}
		after, err := CPUTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		used = after - before
	}
	wall := time.Since(start)
	if used < 100*time.Millisecond || used > wall*time.Duration(runtime.NumCPU())+2*ClockTick {
		t.Errorf("spun %s (%d loops), /proc says %s of CPU", wall, x, used)
	}
}

func TestRSSOfThisProcess(t *testing.T) {
	before, err := RSSMiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1 // touch every page so it is resident
	}
	after, err := RSSMiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(buf)
	// Upper bound generous: under -race the detector's shadow memory grows with the buffer too.
	if after-before < 56 || after-before > 320 {
		t.Errorf("RSS %.1f MiB → %.1f MiB after touching 64 MiB", before, after)
	}
}

func TestChildOf(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid, err := ChildOf(os.Getpid(), "sleep")
	if err != nil {
		t.Fatal(err)
	}
	if pid != cmd.Process.Pid {
		t.Errorf("ChildOf = %d, want %d", pid, cmd.Process.Pid)
	}
	if _, err := ChildOf(os.Getpid(), "envoy"); err == nil || !strings.Contains(err.Error(), "0 children") {
		t.Errorf("a child that does not exist: %v", err)
	}
}
