package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// watchMake returns nil once the make this process runs under has been sent SIGINT, and an
// error when there is no such make (or ctx ends first).
//
// GNU make, sent SIGINT on its own (`kill -INT <make>`, not a terminal's Ctrl-C, which reaches
// the whole process group), passes nothing to its children: it resets SIGINT to the default
// action, blocks it, and waits for them before it dies. So a child sees it in make's
// /proc/<pid>/status: SIGINT no longer among the caught signals (SigCgt).
func watchMake(ctx context.Context) error {
	pid, err := makeAncestor()
	if err != nil {
		return err
	}
	caught, err := catchesSIGINT(pid)
	if err != nil || !caught {
		return fmt.Errorf("make (%d) does not catch SIGINT: %v", pid, err)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if caught, err := catchesSIGINT(pid); err != nil || !caught {
			return nil // interrupted, or gone
		}
	}
}

// makeAncestor is the nearest ancestor process named make (a recipe's shell may come between).
func makeAncestor() (int, error) {
	for pid := os.Getppid(); pid > 1; {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, err
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			return 0, errors.New("unexpected /proc/<pid>/stat")
		}
		if comm := s[open+1 : end]; comm == "make" || comm == "gmake" {
			return pid, nil
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 {
			return 0, errors.New("unexpected /proc/<pid>/stat")
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return 0, err
		}
	}
	return 0, errors.New("not run by make")
}

// catchesSIGINT reads whether process pid has a handler for SIGINT.
func catchesSIGINT(pid int) (bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, err
			}
			const sigint = 2
			return mask&(1<<(sigint-1)) != 0, nil
		}
	}
	return false, errors.New("no SigCgt in /proc/<pid>/status")
}
