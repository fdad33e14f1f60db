package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroup is the cluster's own cgroup, /<name> in every hierarchy: the kubelet's cgroupRoot (the
// pods' containers live under it) and containerd's ShimCgroup (<name>/shims). Whatever a crashed
// run leaves running is found there and killed.
type cgroup struct{ name string }

// cgroupMounts returns the mount points of the cgroup hierarchies (v1 and v2).
func cgroupMounts() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && (g[0] == "cgroup" || g[0] == "cgroup2") {
			out = append(out, f[4])
		}
	}
	return out, nil
}

// v1Mounts are the cgroup v1 hierarchies, where the kubelet (cgroupfs driver) and runc work.
func v1Mounts() ([]string, error) {
	all, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range all {
		if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err == nil {
			continue // cgroup v2
		}
		out = append(out, m)
	}
	return out, nil
}

// create makes /<name> and /<name>/shims in every v1 hierarchy; cpuset ones get their parent's
// CPUs and memory nodes (a new cpuset cgroup has none, and takes no process until it has).
func (c cgroup) create() error {
	mounts, err := v1Mounts()
	if err != nil {
		return err
	}
	if len(mounts) == 0 {
		return errors.New("cluster: no cgroup v1 hierarchy (the kubelet runs with the cgroupfs driver on v1 here)")
	}
	for _, m := range mounts {
		for _, dir := range []string{filepath.Join(m, c.name), filepath.Join(m, c.name, "shims")} {
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("cluster: cgroup: %w", err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					continue // not a cpuset hierarchy
				}
				if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
					return fmt.Errorf("cluster: cgroup: %w", err)
				}
			}
		}
	}
	return nil
}

// dirs returns the cgroup's directories in every hierarchy, deepest first.
func (c cgroup) dirs() ([]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		root := filepath.Join(m, c.name)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cluster: cgroup: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, nil
}

// pids returns the processes in the cgroup, in any hierarchy.
func (c cgroup) pids() ([]int, error) {
	dirs, err := c.dirs()
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue // removed meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out, nil
}

// kill SIGKILLs every process in the cgroup until none is left (containers fork; shims exit
// once their container has), for up to timeout.
func (c cgroup) kill(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := c.pids()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: processes %v still in cgroup %s after %s", pids, c.name, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// remove deletes the cgroup's directories (they must hold no process), retrying briefly: the
// kernel frees a cgroup a moment after its last process is reaped.
func (c cgroup) remove() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		dirs, err := c.dirs()
		if err != nil {
			return err
		}
		var errs []error
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("%s: %w", d, err))
			}
		}
		if len(errs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: removing cgroup %s: %w", c.name, errors.Join(errs...))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
