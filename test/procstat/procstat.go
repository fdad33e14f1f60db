// Package procstat reads what load tests report about processes from /proc: CPU time, resident
// memory, and a process's child by name (an agent's Envoy). Linux only, as the tests are.
package procstat

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const ClockTick = 10 * time.Millisecond

// stat is what this package reads from /proc/<pid>/stat.
type stat struct {
	comm string
	ppid int
	cpu  time.Duration // user + system
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, fmt.Errorf("procstat: %w", err)
	}
	// The command name is in parentheses and may itself hold spaces or parentheses, so fields
	// are counted from the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return stat{}, fmt.Errorf("procstat: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return stat{}, fmt.Errorf("procstat: /proc/%d/stat: %d fields", pid, len(f))
	}
	// After the name: state, ppid, ..., utime (12th), stime (13th).
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stat{}, fmt.Errorf("procstat: /proc/%d/stat: %w", pid, err)
	}
	return stat{comm: s[open+1 : end], ppid: ppid, cpu: time.Duration(ut+st) * ClockTick}, nil
}

// CPUTime is the CPU time (user + system, all threads) process pid has used.
func CPUTime(pid int) (time.Duration, error) {
	s, err := readStat(pid)
	return s.cpu, err
}

// RSSMiB is the resident set size of process pid, in MiB.
func RSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("procstat: /proc/%d/status VmRSS %q: %w", pid, v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("procstat: /proc/%d/status has no VmRSS", pid)
}

// ChildOf returns the one child of process parent whose command name is comm: an agent's
// Envoy, which the agent starts itself.
func ChildOf(parent int, comm string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
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
		return 0, fmt.Errorf("procstat: process %d has %d children named %q, want 1", parent, len(found), comm)
	}
	return found[0], nil
}
