package demorun

import (
	"bufio"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/redistest"
	"github.com/portcullis/portcullis/test/tracetest"
)

// demo is `make demo` running in a process group of its own.
type demo struct {
	cmd  *exec.Cmd
	root string // the repository, where the printed commands run
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{} // closed when make has exited
	err  error
}

// requireTools ends the test when what `make demo` needs is not installed: it fails under
// CI=true (make test installs everything first) and skips loudly elsewhere, so the test never
// starts a 10-minute Jaeger build itself.
func requireTools(t *testing.T) string {
	t.Helper()
	envoytest.Require(t)
	root, err := envoytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if tracetest.JaegerBinary() == "" || tracetest.JaegerUI() == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Jaeger or its UI is not built (make jaeger; CI=true: the demo tests must run)")
		}
		t.Skip("SKIPPING, JAEGER OR ITS UI NOT BUILT: run make jaeger")
	}
	redistest.Require(t) // the demo's Global limit (make demo passes redis-server)
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make: %v", err)
	}
	return root
}

// startDemo runs `make demo` and waits until the demo prints what to try.
func startDemo(t *testing.T, root string) *demo {
	t.Helper()
	d := &demo{root: root, done: make(chan struct{})}
	d.cmd = exec.Command("make", "--no-print-directory", "demo")
	d.cmd.Dir = root
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	withDefaultSignals(func() { err = d.cmd.Start() })
	w.Close()
	if err != nil {
		t.Fatalf("make demo: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			d.mu.Lock()
			d.out.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if strings.Contains(sc.Text(), "Ctrl-C stops the demo") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.kill(t) })
	select {
	case <-ready:
	case <-d.done:
		t.Fatalf("make demo exited (%v) before the demo was up:\n%s", d.err, d.output())
	case <-time.After(10 * time.Minute):
		t.Fatalf("make demo not up after 10 minutes:\n%s", d.output())
	}
	return d
}

func (d *demo) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// kill ends whatever is left of the demo: make's group, and the groups the demo made for its
// children (found through /proc, as children of the demo's processes).
func (d *demo) kill(t *testing.T) {
	for _, pid := range descendants(d.cmd.Process.Pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Errorf("make demo (pid %d) still running after SIGKILL", d.cmd.Process.Pid)
	}
}

// withDefaultSignals runs start with SIGINT, SIGHUP and SIGQUIT handled by this process, so
// the child it starts gets them with their default action: a program started with a signal
// ignored keeps it ignored (as a background job of a non-interactive shell does), and make
// would never see the SIGINT the test sends. Go resets the signals it handles in its children.
func withDefaultSignals(start func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(c)
	start()
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		child, err1 := strconv.Atoi(e.Name())
		if len(fields) < 2 || err1 != nil {
			continue
		}
		if parent, err := strconv.Atoi(fields[1]); err == nil {
			children[parent] = append(children[parent], child)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}
