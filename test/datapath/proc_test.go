package datapath

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/procstat"
)

func TestMachineBusy(t *testing.T) {
	const spinCPU = 250 * time.Millisecond
	before, err := machineBusy()
	if err != nil {
		t.Fatal(err)
	}
	self, err := procstat.CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until this process has used 250 ms of CPU, however long a busy machine makes that:
	// long against the counters' granularity (below).
	for start := time.Now(); time.Since(start) < 20*time.Second; {
		used, err := procstat.CPUTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if used-self >= spinCPU {
			break
		}
		for spin := time.Now(); time.Since(spin) < 5*time.Millisecond; {
			runtime.Gosched()
		}
	}
	after, err := machineBusy()
	if err != nil {
		t.Fatal(err)
	}
	selfAfter, err := procstat.CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The machine was at least as busy as this process, give or take the counters' granularity:
	// /proc/stat counts whole ticks on each CPU, while a process's times are its exact run time
	// spread over its ticks, so over a short window the machine's can trail by a tick or two
	// per CPU (seen in CI: 40 ms against 60 with a 2-tick allowance).
	if slack := time.Duration(2*runtime.NumCPU()) * procstat.ClockTick; after-before < selfAfter-self-slack {
		t.Errorf("machine busy %s while this process used %s", after-before, selfAfter-self)
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
