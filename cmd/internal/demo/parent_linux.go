package demo

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopSignals are the signals GNU make catches and does not pass on: given one of them alone
// (`kill -INT` on make, where Ctrl-C signals the terminal's whole process group), make resets
// the signal to its default and waits for its children, which never hear of it. SIGTERM make
// forwards itself.
var stopSignals = []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// watchParent calls stop when the demo's parent process was told to stop without telling the
// demo: it caught one of stopSignals when the demo started and no longer does (make, above), or
// it went away. /proc/<pid>/status shows what a process catches; a parent that caught none of
// them (a shell waiting on a foreground job) is not watched.
func watchParent(ctx context.Context, stop func(reason string)) {
	ppid := os.Getppid()
	caught, err := caughtSignals(ppid)
	if err != nil {
		return
	}
	var watched uint64
	for _, s := range stopSignals {
		watched |= caught & (1 << (s - 1))
	}
	if watched == 0 {
		return
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now, err := caughtSignals(ppid)
		if err != nil || os.Getppid() != ppid {
			stop(fmt.Sprintf("the parent process %d exited", ppid))
			return
		}
		for _, s := range stopSignals {
			if bit := uint64(1) << (s - 1); watched&bit != 0 && now&bit == 0 {
				stop(fmt.Sprintf("the parent process %d got %s", ppid, signalName(s)))
				return
			}
		}
	}
}

// caughtSignals returns the SigCgt mask of a process: bit n-1 set when signal n has a handler.
func caughtSignals(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("demo: no SigCgt in /proc/%d/status", pid)
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	}
	return s.String()
}
