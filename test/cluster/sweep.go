package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sweepStale removes what runs left behind when their process died without stopping them (a
// crash, SIGKILL, a test binary's timeout): for each run directory whose lock is free, the
// processes in its cgroup (containers, shims) or naming its directory, the cgroup and the
// directory. Interfaces, iptables chains, sysctls and mounts lived in the run's namespaces and
// went with its last process.
func sweepStale(base string, logf func(string, ...any)) error {
	dirs, err := filepath.Glob(filepath.Join(base, runPrefix+"*"))
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	var errs []error
	for _, dir := range dirs {
		lock, stale := staleRun(dir)
		if !stale {
			continue
		}
		logf("cluster: removing %s, left by a run that did not stop", dir)
		if err := cleanRun(dir); err != nil {
			errs = append(errs, err)
		}
		if lock != nil {
			lock.Close()
		}
	}
	return errors.Join(errs...)
}

// staleRun reports whether dir belongs to a run that is over, holding its lock if so.
func staleRun(dir string) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if err != nil {
		// No lock: made by a run that died before taking it, unless it is being made now.
		fi, err := os.Stat(dir)
		return nil, err == nil && time.Since(fi.ModTime()) > time.Minute
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// cleanRun kills what is left of a run and removes its cgroup and directory.
func cleanRun(dir string) error {
	cg := cgroup{filepath.Base(dir)}
	var errs []error
	if err := cg.kill(15 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := killNaming(dir, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := cg.remove(); err != nil {
		errs = append(errs, err)
	}
	if err := removeRun(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killNaming SIGKILLs the processes whose command line mentions dir (a shim has the containerd
// socket's path in it) until none is left.
func killNaming(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := processesNaming(dir)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: processes %v naming %s survive SIGKILL", pids, dir)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes returns every pid in /proc but this process's.
func processes() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

func processesNaming(s string) []int {
	var out []int
	for _, pid := range processes() {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// awaitGone waits for the processes naming s to exit, and SIGKILLs those left at the timeout.
func awaitGone(s string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		pids := processesNaming(s)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// describeProcess is "process <pid>: <command line>".
func describeProcess(pid int) string {
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '}))
}

// hostMountsUnder returns the host's mount points under dir, deepest first.
func hostMountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}

// removeRun unmounts whatever is mounted under dir on the host (nothing, unless a part escaped
// the namespace) and removes it.
func removeRun(dir string) error {
	var errs []error
	for _, m := range hostMountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("cluster: unmounting %s: %w", m, err))
		}
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cluster: %w", err))
	}
	return errors.Join(errs...)
}

// Leftovers lists what remains of the cluster after Stop: processes in its cgroup or naming
// its directory, processes that were still in its namespaces when Stop let them go, its cgroup
// directories, host mounts under its directory, the directory itself. Empty when the cluster
// left nothing behind.
func (c *Cluster) Leftovers() []string {
	var out []string
	if c.ns != nil {
		out = append(out, c.ns.left...)
	}
	return append(out, leftovers(c.Dir)...)
}

// leftovers is what remains of the run in dir but its namespaces.
func leftovers(dir string) []string {
	var out []string
	cg := cgroup{filepath.Base(dir)}
	pids, _ := cg.pids()
	pids = append(pids, processesNaming(dir)...)
	slices.Sort(pids)
	for _, pid := range slices.Compact(pids) {
		out = append(out, describeProcess(pid))
	}
	dirs, _ := cg.dirs()
	for _, d := range dirs {
		out = append(out, "cgroup "+d)
	}
	for _, m := range hostMountsUnder(dir) {
		out = append(out, "mount "+m)
	}
	if _, err := os.Stat(dir); err == nil {
		out = append(out, "directory "+dir)
	}
	return out
}

// HostState is what of the host's network and mounts a cluster could change: the iptables
// chains Kubernetes and the CNI plugins make (both back ends), the interfaces, the named network
// namespaces and the mounts of containerd and the kubelet. A cluster runs in namespaces of its
// own, so it must leave all of them as they were.
type HostState struct {
	Chains, Links, NetNS, Mounts []string
}

// ReadHostState reads the host's state (needs root and iptables).
func ReadHostState() (HostState, error) {
	var s HostState
	for _, save := range []string{"iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, err := exec.Command(save).Output()
		if err != nil {
			return s, fmt.Errorf("cluster: %s: %w", save, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "KUBE-") || strings.Contains(line, "CNI-") {
				s.Chains = append(s.Chains, save+": "+line)
			}
		}
	}
	links, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return s, fmt.Errorf("cluster: ip link: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(links)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			s.Links = append(s.Links, strings.TrimSuffix(f[1], ":"))
		}
	}
	netns, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return s, fmt.Errorf("cluster: ip netns: %w", err)
	}
	s.NetNS = strings.Fields(string(netns))
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return s, fmt.Errorf("cluster: %w", err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, "containerd") || strings.Contains(line, "kubelet") || strings.Contains(line, runPrefix) {
			s.Mounts = append(s.Mounts, line)
		}
	}
	return s, nil
}
