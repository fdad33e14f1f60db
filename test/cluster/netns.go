package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The cluster's addresses. They exist only inside the cluster's own network namespace, so they
// cannot clash with the host's or another cluster's.
const (
	NodeName      = "portcullis-node"
	NodeIP        = "172.30.0.1" // on the namespace's lo, as a /32 (there is no dummy interface type)
	PodCIDR       = "10.244.0.0/24"
	PodGateway    = "10.244.0.1" // the bridge's address: pods reach the node IP through it
	Bridge        = "cni0"
	ServiceCIDR   = "10.96.0.0/16"
	APIServiceIP  = "10.96.0.1" // the kubernetes Service
	ClusterDomain = "cluster.local"
	APIServerPort = 6443
)

// kernelTunables are the host-wide settings the kubelet insists on (it changes them unless
// protectKernelDefaults, and then refuses to start if they differ): panic on oops, reboot 10 s
// after a panic, always overcommit. The cluster's mount namespace shows the kubelet these values
// over /proc/sys, so the shared host is never changed.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// namespaces is the holder of the cluster's network and mount namespaces: every part runs in
// both (nsenter), so the cluster's interfaces, routes, iptables chains, sysctls and mounts are
// its own and vanish with its last process. Nothing is changed on the host.
type namespaces struct {
	holder  *exec.Cmd
	done    chan struct{}
	nsenter string
	ref     *nsRef   // held until close: to dial into the network namespace, and to name both
	left    []string // processes still inside once close ended the holder
}

// nsRef holds a process's network and mount namespaces open. While held, their inode numbers
// name them and nothing else: the kernel reuses the numbers of namespaces it has freed.
type nsRef struct {
	files [2]*os.File // net, mnt
	ids   [2]uint64
}

var nsKinds = [2]string{"net", "mnt"}

func openNamespaces(pid int) (*nsRef, error) {
	r := &nsRef{}
	for i, kind := range nsKinds {
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/" + kind)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("cluster: %w", err)
		}
		r.files[i] = f
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			r.close()
			return nil, fmt.Errorf("cluster: %w", err)
		}
		r.ids[i] = st.Ino
	}
	return r, nil
}

// members returns the processes in either namespace, each with its command line.
func (r *nsRef) members() []string {
	var out []string
	for _, pid := range processes() {
		for i, kind := range nsKinds {
			var st unix.Stat_t
			if unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/"+kind, &st) == nil && st.Ino == r.ids[i] {
				out = append(out, describeProcess(pid))
				break
			}
		}
	}
	return out
}

func (r *nsRef) close() {
	for _, f := range r.files {
		if f != nil {
			f.Close()
		}
	}
}

// newNamespaces starts the holder (unshare ... sleep) and sets the namespaces up: tmpfs over
// /run, /var/lib and /var/log (containerd's shim sockets, the CNI cache, the kubelet's log links:
// paths the parts do not let us choose), the tunables over /proc/sys, etcd's data on tmpfs, lo
// up with the node IP, the pods' bridge, and forwarding.
func newNamespaces(p Parts, dir string) (*namespaces, error) {
	n := &namespaces{nsenter: p.Nsenter, done: make(chan struct{})}
	n.holder = exec.Command(p.Unshare, "--mount", "--net", "--propagation", "private", "--", "sleep", "infinity")
	n.holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.holder.Start(); err != nil {
		return nil, fmt.Errorf("cluster: starting the namespace holder: %w", err)
	}
	go func() { _ = n.holder.Wait(); close(n.done) }()
	// unshare execs sleep once the namespaces exist: wait for that.
	pid := strconv.Itoa(n.holder.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile("/proc/" + pid + "/comm"); err == nil && strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			n.close()
			return nil, errors.New("cluster: the namespace holder did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var err error
	if n.ref, err = openNamespaces(n.holder.Process.Pid); err != nil {
		n.close()
		return nil, err
	}
	if err := n.setUp(p, dir); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

func (n *namespaces) setUp(p Parts, dir string) error {
	tunables := filepath.Join(dir, "sysctl")
	if err := os.MkdirAll(tunables, 0o755); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	steps := [][]string{
		{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"},
		{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var/lib"},
		{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var/log"},
		{"mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", filepath.Join(dir, "etcd")},
	}
	for name, value := range kernelTunables {
		file := filepath.Join(tunables, strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(file, []byte(value+"\n"), 0o644); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		steps = append(steps, []string{"mount", "--bind", file, "/proc/sys/" + name})
	}
	steps = append(steps,
		[]string{p.IP, "link", "set", "lo", "up"},
		[]string{p.IP, "addr", "add", NodeIP + "/32", "dev", "lo"},
		[]string{p.IP, "link", "add", Bridge, "type", "bridge"},
		[]string{p.IP, "addr", "add", PodGateway + "/24", "dev", Bridge},
		[]string{p.IP, "link", "set", Bridge, "up"},
		// Service IPs are only ever DNAT'ed (kube-proxy), but the node's own connections to them
		// need a route first: a real node has a default route, this namespace has none.
		[]string{p.IP, "route", "add", ServiceCIDR, "dev", Bridge, "src", NodeIP},
		[]string{"sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
		// Per namespace since Linux 5.3; kube-proxy needs bridged pod traffic to pass iptables.
		[]string{"sh", "-c", "f=/proc/sys/net/bridge/bridge-nf-call-iptables; [ ! -e $f ] || echo 1 > $f"},
	)
	if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	for _, s := range steps {
		if err := n.run(s...); err != nil {
			return err
		}
	}
	return nil
}

// command returns argv run inside the namespaces.
func (n *namespaces) command(argv ...string) *exec.Cmd {
	args := append([]string{"--target", strconv.Itoa(n.holder.Process.Pid), "--mount", "--net", "--"}, argv...)
	return exec.Command(n.nsenter, args...)
}

// run runs argv inside the namespaces to completion.
func (n *namespaces) run(argv ...string) error {
	cmd := n.command(argv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cluster: %s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DialContext connects from inside the cluster's network namespace, as a process on the node
// would: pod IPs, Service IPs and the node's own ports are reachable. addr must be an IP and port.
func (n *namespaces) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// The socket is made in the namespace of the thread that makes it: this goroutine's
		// locked thread enters the cluster's namespace and goes back before unlocking. If it
		// cannot go back, it stays locked, and Go ends the thread with the goroutine.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer self.Close()
		if err := unix.Setns(int(n.ref.files[0].Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("cluster: entering the network namespace: %w", err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
			if conn != nil {
				conn.Close()
			}
			ch <- result{err: fmt.Errorf("cluster: leaving the network namespace: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// forward accepts connections on a loopback port of the host and relays each to target inside
// the cluster's namespace: how kubectl and the tests reach the API server.
type forwarder struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (n *namespaces) forward(target string) (*forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	f := &forwarder{ln: ln, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.relay(c, n, target)
			}()
		}
	}()
	return f, nil
}

func (f *forwarder) relay(c net.Conn, n *namespaces, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := n.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		c.Close()
		return
	}
	if !f.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	f.untrack(c, up)
}

func (f *forwarder) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil { // closed
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = true
	}
	return true
}

func (f *forwarder) untrack(conns ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(f.conns, c)
	}
}

// Addr is the host's end, 127.0.0.1:<port>.
func (f *forwarder) Addr() string { return f.ln.Addr().String() }

// close stops accepting, closes every relayed connection and waits for the relays.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}

// close ends the holder, notes which processes are still inside (none, when the caller has
// stopped every part first) and lets the namespaces go: the kernel frees them once no process
// is in them and nothing holds them open.
func (n *namespaces) close() {
	if n.holder.Process != nil {
		_ = syscall.Kill(n.holder.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
	if n.ref != nil {
		n.left = n.ref.members()
		n.ref.close()
	}
}
