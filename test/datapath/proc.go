package datapath

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// stat is what the benchmark reads from /proc/<pid>/stat.
type stat struct {
	comm string
	ppid int
	cpu  time.Duration // user + system
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, fmt.Errorf("datapath: %w", err)
	}
	// The command name is in parentheses and may itself hold spaces or parentheses, so fields
	// are counted from the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return stat{}, fmt.Errorf("datapath: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return stat{}, fmt.Errorf("datapath: /proc/%d/stat: %d fields", pid, len(f))
	}
	// After the name: state, ppid, ..., utime (12th), stime (13th).
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stat{}, fmt.Errorf("datapath: /proc/%d/stat: %w", pid, err)
	}
	return stat{comm: s[open+1 : end], ppid: ppid, cpu: time.Duration(ut+st) * clockTick}, nil
}

// cpuTime is the CPU time (user + system, all threads) process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	s, err := readStat(pid)
	return s.cpu, err
}

// rssMiB is the resident set size of process pid, in MiB.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("datapath: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("datapath: /proc/%d/status VmRSS %q: %w", pid, v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("datapath: /proc/%d/status has no VmRSS", pid)
}

// childOf returns the one child of process parent whose command name is comm: an agent's
// Envoy, which the agent starts itself.
func childOf(parent int, comm string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("datapath: %w", err)
	}
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		s, err := readStat(pid)
		if err != nil {
			continue // exited since the listing
		}
		if s.ppid == parent && s.comm == comm {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("datapath: process %d has %d children named %q, want 1", parent, len(found), comm)
	}
	return found[0], nil
}

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
	return time.Duration(busy) * clockTick, nil
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
		c, err := cpuTime(p.pid)
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
		c, err := cpuTime(p.pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.name, err)
		}
		busy -= c
	}
	return busy, nil
}
