// Package redistest runs a real Redis (Debian's redis-server) for tests: on a loopback port the
// OS chose, with its own configuration and no persistence, stopped when the test ends.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/proctest"
)

// Find returns the redis-server binary: $REDIS_SERVER, or redis-server on PATH.
func Find() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redistest: redis-server not found (make test installs Debian's redis-server; or set REDIS_SERVER): %w", err)
	}
	return p, nil
}

// Require returns the redis-server binary, or ends the test: skipping it under -short (make
// test's short pass runs before Redis is installed), failing it under CI=true (where Redis must
// be installed) and skipping it elsewhere.
func Require(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Redis (not a -short test)")
	}
	p, err := Find()
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: tests that need Redis must run)", err)
	}
	t.Skipf("SKIPPING, NO REDIS: %v", err)
	return ""
}

// Redis is a redis-server the test started.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	Addr string // 127.0.0.1:port, the same across Stop and Start
	// Password is required of clients when set (requirepass).
	Password string
	proc     *proctest.Process
}

// Start runs a Redis on a free loopback port and waits until it answers. With password, clients
// must authenticate.
func Start(t testing.TB, password string) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: Require(t), dir: t.TempDir(), Password: password}
	r.Addr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	r.Start()
	return r
}

// Start starts the server again (after Stop) on the same address.
func (r *Redis) Start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	conf := strings.Join([]string{
		"bind 127.0.0.1", "port " + port, "protected-mode yes", "daemonize no",
		`save ""`, "appendonly no", "dir " + r.dir, `logfile ""`, "databases 1",
	}, "\n") + "\n"
	if r.Password != "" {
		conf += "requirepass " + r.Password + "\n"
	}
	file := filepath.Join(r.dir, "redis.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.proc = proctest.Start(r.t, "redis", r.bin, file)
	proctest.Eventually(r.t, 10*time.Second, r.ping, "redis answering on "+r.Addr)
}

// Stop stops the server (SIGTERM); Start brings it back on the same address.
func (r *Redis) Stop() { r.proc.Stop() }

// Pause stops the server (SIGSTOP) until Resume: connections stay open and nothing answers, as
// when the network to Redis drops packets.
func (r *Redis) Pause() { _ = syscall.Kill(r.proc.Pid(), syscall.SIGSTOP) }

// Resume continues a paused server.
func (r *Redis) Resume() { _ = syscall.Kill(r.proc.Pid(), syscall.SIGCONT) }

// ping sends PING (after AUTH) and expects PONG.
func (r *Redis) ping() error {
	select {
	case <-r.proc.Exited():
		return fmt.Errorf("redis-server exited:\n%s", r.proc.Log())
	default:
	}
	_, err := r.Do("PING")
	return err
}

// conn connects and authenticates.
func (r *Redis) conn() (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	rd := bufio.NewReader(c)
	if r.Password != "" {
		if _, err := fmt.Fprintf(c, "AUTH %s\r\n", r.Password); err != nil {
			c.Close()
			return nil, nil, err
		}
		if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			c.Close()
			return nil, nil, fmt.Errorf("AUTH: %q %v", line, err)
		}
	}
	return c, rd, nil
}

// Do sends one command (inline form: arguments without spaces) and returns the first line of the
// answer, "+OK", ":42", "$5" and so on; an error reply is an error.
func (r *Redis) Do(args ...string) (string, error) {
	c, rd, err := r.conn()
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\r\n", strings.Join(args, " ")); err != nil {
		return "", err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	return line, nil
}

// Info returns the fields of an INFO section ("commandstats": "cmdstat_evalsha" → "calls=3,...").
func (r *Redis) Info(section string) (map[string]string, error) {
	c, rd, err := r.conn()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "INFO %s\r\n", section); err != nil {
		return nil, err
	}
	head, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		return nil, fmt.Errorf("INFO: %q %v", head, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return nil, err
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(rd, body); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(body), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, "#") {
			out[k] = v
		}
	}
	return out, nil
}

// Calls returns how many times Redis ran command (INFO commandstats), 0 before the first.
func (r *Redis) Calls(command string) (int, error) {
	info, err := r.Info("commandstats")
	if err != nil {
		return 0, err
	}
	for _, f := range strings.Split(info["cmdstat_"+command], ",") {
		if v, ok := strings.CutPrefix(f, "calls="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, nil
}
