// Package proctest builds the portcullis binary and runs it as real processes in tests: it keeps
// each process's log, waits for log lines (text or JSON format), shows the logs of a failed
// test, and stops every process (SIGTERM, then SIGKILL) when the test ends.
package proctest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
)

// build is one variant of cmd/portcullis, built once per test binary.
type build struct {
	once sync.Once
	path string
	err  error
}

var (
	fullBuild, agentBuild build
)

// Binary builds cmd/portcullis (as make build: static) once per test binary and returns its path.
func Binary(t testing.TB) string { return buildBinary(t, &fullBuild, "portcullis") }

// AgentBinary builds the sidecar build (make build's bin/portcullis-agent: -tags agentonly)
// once per test binary and returns its path.
func AgentBinary(t testing.TB) string {
	return buildBinary(t, &agentBuild, "portcullis-agent", "-tags", "agentonly")
}

func buildBinary(t testing.TB, b *build, name string, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		root, err := envoytest.RepoRoot()
		if err != nil {
			b.err = err
			return
		}
		dir, err := binDir()
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", b.path, "./cmd/portcullis")...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// binDirPrefix names the directories test binaries build into: <TMPDIR>/portcullis-bin-<pid>.
const binDirPrefix = "portcullis-bin-"

// binDir returns this test binary's build directory. A test binary has no hook at its end, so
// each one removes the directories of test binaries that are no longer running instead.
func binDir() (string, error) {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range old {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), binDirPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); os.IsNotExist(err) {
			_ = os.RemoveAll(d)
		}
	}
	dir := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(os.Getpid()))
	return dir, os.MkdirAll(dir, 0o700)
}

// Process is a running portcullis (or other) process.
type Process struct {
	Name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  []string
	done chan struct{}
}

// Start runs bin with args until the test ends (or Stop). name labels its log.
func Start(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = p.cmd.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			p.mu.Lock()
			p.log = append(p.log, s.Text())
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.Log())
		}
	})
	return p
}

// Stop sends SIGTERM to the process group and waits up to 8s before killing it.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(8 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill kills the process group at once, as a crash would.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Log returns everything the process logged so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}

// Wait returns the value of attr in the first log line with message msg, waiting up to 60s.
func (p *Process) Wait(t testing.TB, msg, attr string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for seen := 0; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		p.mu.Lock()
		lines := p.log[seen:]
		p.mu.Unlock()
		for _, l := range lines {
			if v, ok := attrOf(l, msg, attr); ok {
				return v
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before logging %q:\n%s", p.Name, msg, p.Log())
		default:
		}
	}
	t.Fatalf("%s: no %q within 60s:\n%s", p.Name, msg, p.Log())
	return ""
}

// Count returns how many log lines have message msg.
func (p *Process) Count(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.log {
		if _, ok := attrOf(l, msg, ""); ok {
			n++
		}
	}
	return n
}

// attrOf parses a slog line (JSON or text) and returns attr when its message is msg.
func attrOf(line, msg, attr string) (string, bool) {
	if strings.HasPrefix(line, "{") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
			return "", false
		}
		v, _ := rec[attr].(string)
		return v, true
	}
	if !strings.Contains(line, "msg="+fmt.Sprintf("%q", msg)) && !strings.Contains(line, "msg="+msg+" ") {
		return "", false
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, attr+"="); ok && attr != "" {
			return strings.Trim(v, `"`), true
		}
	}
	return "", true
}

// FreePort returns a loopback TCP port that was free a moment ago, for a process that takes its
// port from a flag or a document and cannot report the one the OS chose.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Eventually retries f until it succeeds and returns how long that took, or fails the test with
// f's last error once timeout has passed. It polls at 25 ms, backing off to 200 ms, so checks
// that start a process each time do not spin.
func Eventually(t testing.TB, timeout time.Duration, f func() error, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for wait := 25 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(wait)
	}
}
