package datapath

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/test/procstat"
)

// machineBusy is the CPU time all CPUs of the machine have spent on anything but idling and
// waiting for I/O (and time a hypervisor stole), from the first line of /proc/stat.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("datapath: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("datapath: /proc/stat: unexpected first line %q", line)
	}
	var busy int64
	// user, nice, system, (idle, iowait skipped), irq, softirq
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("datapath: /proc/stat: %w", err)
		}
		busy += v
	}
	return time.Duration(busy) * procstat.ClockTick, nil
}

// proc is one process whose CPU and memory the benchmark reports.
type proc struct {
	name string
	pid  int
}

// cpuSample is the CPU time each of a list of processes had used at one moment.
type cpuSample struct {
	at  time.Time
	cpu []time.Duration
}

func sampleCPU(procs []proc) (cpuSample, error) {
	s := cpuSample{at: time.Now(), cpu: make([]time.Duration, len(procs))}
	for i, p := range procs {
		c, err := procstat.CPUTime(p.pid)
		if err != nil {
			return cpuSample{}, fmt.Errorf("%s: %w", p.name, err)
		}
		s.cpu[i] = c
	}
	return s, nil
}

// percentPerKRPS converts the CPU each process used from s to later, while load ran at rate
// requests per second, to percent of one core per 1,000 rps.
func (s cpuSample) percentPerKRPS(later cpuSample, rate float64) []float64 {
	wall := later.at.Sub(s.at).Seconds()
	out := make([]float64, len(s.cpu))
	for i := range s.cpu {
		out[i] = (later.cpu[i] - s.cpu[i]).Seconds() / wall * 100 / (rate / 1000)
	}
	return out
}

// otherLoad measures the CPU the machine spends outside the measured processes and this one
// (the load generator and the application): other work sharing the machine, plus kernel
// interrupt time not charged to any process.
type otherLoad struct {
	procs []proc
	at    time.Time
	busy  time.Duration // the machine's, minus the processes' and this one's
}

func otherLoadStart(procs []proc) (otherLoad, error) {
	busy, err := otherBusy(procs)
	return otherLoad{procs: procs, at: time.Now(), busy: busy}, err
}

// percentUntilNow returns the other load since the start, in percent of one core.
func (o otherLoad) percentUntilNow() (float64, error) {
	busy, err := otherBusy(o.procs)
	if err != nil {
		return 0, err
	}
	return (busy - o.busy).Seconds() / time.Since(o.at).Seconds() * 100, nil
}

func otherBusy(procs []proc) (time.Duration, error) {
	busy, err := machineBusy()
	if err != nil {
		return 0, err
	}
	for _, p := range append(procs, proc{"benchmark", os.Getpid()}) {
		c, err := procstat.CPUTime(p.pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.name, err)
		}
		busy -= c
	}
	return busy, nil
}
