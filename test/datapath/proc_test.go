package datapath

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCPUTimeOfThisProcess(t *testing.T) {
	before, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	x := 0
	for time.Since(start) < 200*time.Millisecond {
		x++ // spin: one busy thread
	}
	wall := time.Since(start)
	after, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	used := after - before
	// At least most of the spin (the machine may be busy), at most every CPU for the whole time.
	if used < 100*time.Millisecond || used > wall*time.Duration(runtime.NumCPU())+2*clockTick {
		t.Errorf("spun %s (%d loops), /proc says %s of CPU", wall, x, used)
	}
}

func TestMachineBusy(t *testing.T) {
	before, err := machineBusy()
	if err != nil {
		t.Fatal(err)
	}
	self, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 100*time.Millisecond {
	}
	after, err := machineBusy()
	if err != nil {
		t.Fatal(err)
	}
	selfAfter, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The machine was at least as busy as this process (give or take a tick of each counter).
	if after-before < selfAfter-self-2*clockTick || after-before < 50*time.Millisecond {
		t.Errorf("machine busy %s while this process used %s", after-before, selfAfter-self)
	}
}

func TestRSSOfThisProcess(t *testing.T) {
	before, err := rssMiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1 // touch every page so it is resident
	}
	after, err := rssMiB(os.Getpid())
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
	pid, err := childOf(os.Getpid(), "sleep")
	if err != nil {
		t.Fatal(err)
	}
	if pid != cmd.Process.Pid {
		t.Errorf("childOf = %d, want %d", pid, cmd.Process.Pid)
	}
	if _, err := childOf(os.Getpid(), "envoy"); err == nil || !strings.Contains(err.Error(), "0 children") {
		t.Errorf("a child that does not exist: %v", err)
	}
}

func TestPercentPerKRPS(t *testing.T) {
	start := cpuSample{at: time.Unix(100, 0), cpu: []time.Duration{time.Second, 0}}
	end := cpuSample{at: time.Unix(110, 0), cpu: []time.Duration{3 * time.Second, 10 * time.Second}}
	// 2 s of CPU in 10 s is 20 % of a core at 2,000 rps: 10 % per 1,000 rps; 10 s in 10 s is
	// one core: 50 % per 1,000 rps.
	got := start.percentPerKRPS(end, 2000)
	if len(got) != 2 || got[0] != 10 || got[1] != 50 {
		t.Errorf("percentPerKRPS = %v, want [10 50]", got)
	}
}
