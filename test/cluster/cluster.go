package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/images"
	"github.com/portcullis/portcullis/test/procstat"
)

// PauseRef is the sandbox image containerd runs every pod's namespaces with; the harness builds
// and imports it (no registry is reachable).
const PauseRef = images.Repository + "pause:latest"

// Options adjust a cluster.
type Options struct {
	// Images are built (uncompressed layers) and imported before the cluster is ready, as are
	// Tarballs (e.g. `make images` output). The pause image always is.
	Images   []images.Image
	Tarballs []string
	// TempDir holds the run directory; os.TempDir() unless set.
	TempDir string
	// Logf receives progress; nil discards it.
	Logf func(format string, args ...any)
}

// Timings are how long start-up took, from New's start.
type Timings struct {
	APIServer      time.Duration // /readyz answered ok
	Images         time.Duration // every image imported
	NodeReady      time.Duration // the node's Ready condition
	ServiceAccount time.Duration // the default service account (the controller manager works)
	Ready          time.Duration // all of the above, kube-proxy synced and CoreDNS ready
}

// Cluster is a running single-node Kubernetes cluster.
type Cluster struct {
	// Dir is the run directory: configuration, certificates, state and logs.
	Dir string
	// Kubeconfig is a cluster-admin kubeconfig for the host (the API server through a loopback
	// port); Config and Client are the same.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	Timings    Timings

	parts Parts
	l     layout
	cg    cgroup
	files *files
	ns    *namespaces
	fwd   *forwarder
	lock  *os.File
	logf  func(string, ...any)

	mu    sync.Mutex
	procs []*process

	stopOnce sync.Once
	stopErr  error
	stopped  time.Duration
}

// runPrefix names run directories (and cgroups): <TempDir>/portcullis-cluster-*.
const runPrefix = "portcullis-cluster-"

// New starts a cluster and returns once it is ready: the node Ready, the default service
// account made, kube-proxy synced, CoreDNS answering, the images imported. Leftovers of runs
// whose process died are removed first. On error everything started is stopped.
func New(ctx context.Context, opts Options) (_ *Cluster, err error) {
	begin := time.Now()
	parts, err := FindParts()
	if err != nil {
		return nil, err
	}
	root, err := envoytest.RepoRoot()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	base := opts.TempDir
	if base == "" {
		base = os.TempDir()
	}
	if err := sweepStale(base, logf); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(base, runPrefix)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{Dir: dir, parts: parts, l: layout{dir}, cg: cgroup{filepath.Base(dir)}, logf: logf}
	if c.lock, err = lockRun(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			if serr := c.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if err := c.cg.create(); err != nil {
		return nil, err
	}
	if c.files, err = writeFiles(c.l, c.cg); err != nil {
		return nil, err
	}
	if c.ns, err = newNamespaces(parts, dir); err != nil {
		return nil, err
	}
	if c.fwd, err = c.ns.forward(net.JoinHostPort(NodeIP, strconv.Itoa(APIServerPort))); err != nil {
		return nil, err
	}
	c.Kubeconfig = c.l.path("kubeconfig", "host")
	admin, err := c.files.pki.client("host-admin", "portcullis-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	if err := writeKubeconfig(c.Kubeconfig, "https://"+c.fwd.Addr(), c.files.pki.CAFile(), admin); err != nil {
		return nil, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}

	etcd, err := c.start("etcd", parts.Etcd, "--name", NodeName, "--data-dir", c.l.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", NodeName+"=http://127.0.0.1:2380", "--logger", "zap", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	containerd, err := c.start("containerd", parts.Containerd, "--config", c.files.containerd)
	if err != nil {
		return nil, err
	}
	// Images are built and imported while the API server starts; on a failure meanwhile the
	// import is cancelled and awaited before Stop removes the directory it writes to.
	importCtx, cancelImport := context.WithCancel(ctx)
	imported := make(chan error, 1)
	go func() { imported <- c.importAll(importCtx, root, opts, containerd, begin) }()
	importing := true
	defer func() {
		cancelImport()
		if importing {
			// The start failed; the import was cancelled with it.
			if err := <-imported; err != nil {
				c.logf("cluster: image import stopped: %v", err)
			}
		}
	}()
	if err := c.await(ctx, 30*time.Second, "etcd healthy", c.httpOK("http://127.0.0.1:2379/health"), etcd); err != nil {
		return nil, err
	}
	apiserver, err := c.start("kube-apiserver", append([]string{parts.APIServer}, c.apiserverArgs()...)...)
	if err != nil {
		return nil, err
	}
	if err := c.await(ctx, 60*time.Second, "API server ready", c.apiReady, apiserver); err != nil {
		return nil, err
	}
	c.Timings.APIServer = time.Since(begin)
	logf("cluster: API server ready after %s", c.Timings.APIServer.Round(time.Millisecond))
	node, err := c.startNode()
	if err != nil {
		return nil, err
	}
	importing = false
	if err := <-imported; err != nil {
		return nil, err
	}
	if err := c.await(ctx, 60*time.Second, "node Ready", c.nodeReady(begin), node...); err != nil {
		return nil, err
	}
	if err := c.await(ctx, 60*time.Second, "default service account", c.serviceAccount(begin), node...); err != nil {
		return nil, err
	}
	if err := c.await(ctx, 60*time.Second, "kube-proxy synced", c.httpOK("http://127.0.0.1:10256/healthz"), node...); err != nil {
		return nil, err
	}
	if err := c.await(ctx, 60*time.Second, "CoreDNS ready", c.httpOK("http://127.0.0.1:8181/ready"), node...); err != nil {
		return nil, err
	}
	c.Timings.Ready = time.Since(begin)
	logf("cluster: ready after %s (API server %s, images %s, node Ready %s, default service account %s); KUBECONFIG=%s",
		c.Timings.Ready.Round(time.Millisecond), c.Timings.APIServer.Round(time.Millisecond), c.Timings.Images.Round(time.Millisecond),
		c.Timings.NodeReady.Round(time.Millisecond), c.Timings.ServiceAccount.Round(time.Millisecond), c.Kubeconfig)
	return c, nil
}

func (c *Cluster) apiserverArgs() []string {
	f := c.files
	return []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=" + NodeIP, "--advertise-address=" + NodeIP, "--secure-port=" + strconv.Itoa(APIServerPort),
		"--cert-dir=" + c.l.path("apiserver"),
		"--tls-cert-file=" + f.apiserver.Cert, "--tls-private-key-file=" + f.apiserver.Key,
		"--client-ca-file=" + f.pki.CAFile(),
		"--kubelet-client-certificate=" + f.kubeletClient.Cert, "--kubelet-client-key=" + f.kubeletClient.Key,
		// Logs and exec reach the kubelet at the node IP (no resolvable host name).
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
		"--service-account-key-file=" + f.saPub, "--service-account-signing-key-file=" + f.saKey,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// Webhooks are called at their endpoints' pod IPs, not through kube-proxy's Service IP.
		"--enable-aggregator-routing=true",
		"--profiling=false",
		// Aggregated APIs (and the extension-apiserver-authentication ConfigMap, whose absence
		// the API server logs every few seconds).
		"--requestheader-client-ca-file=" + f.pki.CAFile(), "--requestheader-allowed-names=" + frontProxyUser,
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + f.frontProxy.Cert, "--proxy-client-key-file=" + f.frontProxy.Key,
	}
}

// startNode starts what runs once the API server is up: controller manager, scheduler, kubelet,
// kube-proxy and CoreDNS.
func (c *Cluster) startNode() ([]*process, error) {
	f, p := c.files, c.parts
	var out []*process
	for _, s := range []struct {
		name string
		argv []string
	}{
		{"kube-controller-manager", []string{p.ControllerManager,
			"--kubeconfig=" + f.kcm, "--authentication-kubeconfig=" + f.kcm, "--authorization-kubeconfig=" + f.kcm,
			"--bind-address=127.0.0.1", "--leader-elect=false", "--cluster-name=portcullis",
			// 1.37's controller names; node IPAM is off: the pod CIDR is the CNI configuration's.
			"--controllers=*,-node-ipam-controller",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + f.saKey, "--root-ca-file=" + f.pki.CAFile(),
			"--cluster-signing-cert-file=" + f.pki.CAFile(), "--cluster-signing-key-file=" + f.caKey}},
		{"kube-scheduler", []string{p.Scheduler,
			"--kubeconfig=" + f.scheduler, "--authentication-kubeconfig=" + f.scheduler, "--authorization-kubeconfig=" + f.scheduler,
			"--bind-address=127.0.0.1", "--leader-elect=false"}},
		{"kubelet", []string{p.Kubelet, "--config=" + f.kubeletConfig, "--kubeconfig=" + f.kubelet,
			"--node-ip=" + NodeIP, "--hostname-override=" + NodeName, "--root-dir=" + c.l.path("kubelet", "root")}},
		{"kube-proxy", []string{p.Proxy, "--config=" + f.proxyConfig}},
		{"coredns", []string{p.CoreDNS, "-conf", f.corefile}},
	} {
		proc, err := c.start(s.name, s.argv...)
		if err != nil {
			return nil, err
		}
		out = append(out, proc)
	}
	return out, nil
}

// importAll builds the pause image and opts.Images into the run directory and imports them
// with opts.Tarballs into containerd's k8s.io namespace (the CRI's).
func (c *Cluster) importAll(ctx context.Context, root string, opts Options, containerd *process, begin time.Time) error {
	dir := c.l.path("images")
	pause := filepath.Join(dir, "pause")
	if err := images.GoBuild(ctx, root, pause, "./test/images/pause"); err != nil {
		return err
	}
	results, err := images.Write(append([]images.Image{images.PauseImage(pause)}, opts.Images...), images.Options{Dir: dir})
	if err != nil {
		return err
	}
	tarballs := append([]string(nil), opts.Tarballs...)
	for _, r := range results {
		tarballs = append(tarballs, r.Path)
	}
	if err := c.await(ctx, 30*time.Second, "containerd serving", func(ctx context.Context) error {
		return exec.CommandContext(ctx, c.parts.Ctr, "--address", c.l.containerdSocket(), "version").Run()
	}, containerd); err != nil {
		return err
	}
	if err := c.Import(ctx, tarballs...); err != nil {
		return err
	}
	c.Timings.Images = time.Since(begin)
	return nil
}

// Import loads image tarballs into the cluster's containerd, where pods with
// imagePullPolicy Never or IfNotPresent find them.
func (c *Cluster) Import(ctx context.Context, tarballs ...string) error {
	for _, t := range tarballs {
		cmd := exec.CommandContext(ctx, c.parts.Ctr, "--address", c.l.containerdSocket(), "--namespace", "k8s.io", "images", "import", t)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cluster: importing %s: %v: %s", t, err, out)
		}
	}
	return nil
}

// DialContext connects from the node's network namespace: pod IPs, Service IPs and the node IP
// are reachable. addr must be an IP address and port.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.ns.DialContext(ctx, network, addr)
}

// HTTPClient is a client that connects from the node (see DialContext).
func (c *Cluster) HTTPClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.DialContext, DisableKeepAlives: true}}
}

// NamespacePID is a process inside the cluster's namespaces, for
// `nsenter --target <pid> --net --mount` from a shell.
func (c *Cluster) NamespacePID() int { return c.ns.holder.Process.Pid }

// await polls ready until it returns nil, failing early when one of the watched processes exits.
func (c *Cluster) await(ctx context.Context, timeout time.Duration, what string, ready func(context.Context) error, watch ...*process) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		for _, p := range watch {
			if done, err := p.exited(); done {
				return fmt.Errorf("cluster: waiting for %s: %w", what, err)
			}
		}
		probe, cancelProbe := context.WithTimeout(ctx, 5*time.Second)
		last = ready(probe)
		cancelProbe()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s: not within %s: %v%s", what, timeout, last, c.tails(watch))
		case <-time.After(wait):
		}
	}
}

func (c *Cluster) tails(procs []*process) string {
	s := ""
	for _, p := range procs {
		s += fmt.Sprintf("\n--- %s (%s), last lines:\n%s", p.name, p.log, p.tail(20))
	}
	return s
}

// httpOK probes a plain-HTTP endpoint inside the namespace.
func (c *Cluster) httpOK(url string) func(context.Context) error {
	client := c.HTTPClient()
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func (c *Cluster) apiReady(ctx context.Context) error {
	b, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("%v %s", err, b)
	}
	return nil
}

func (c *Cluster) nodeReady(begin time.Time) func(context.Context) error {
	return func(ctx context.Context) error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status != corev1.ConditionTrue {
					return fmt.Errorf("node %s: Ready %s: %s", NodeName, cond.Status, cond.Message)
				}
				c.Timings.NodeReady = time.Since(begin)
				return nil
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", NodeName)
	}
}

func (c *Cluster) serviceAccount(begin time.Time) func(context.Context) error {
	return func(ctx context.Context) error {
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		c.Timings.ServiceAccount = time.Since(begin)
		return nil
	}
}

// Part is one of the cluster's processes and its resident memory.
type Part struct {
	Name   string
	Pid    int
	RSSMiB float64
}

// RSS returns the cluster's processes (etcd, API server, ..., CoreDNS) and, summed, the
// containerd shims and the pods' processes, with their resident memory.
func (c *Cluster) RSS() []Part {
	c.mu.Lock()
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()
	var out []Part
	for _, p := range procs {
		if done, _ := p.exited(); done {
			continue
		}
		rss, _ := procstat.RSSMiB(p.pid) // 0 if it exited meanwhile
		out = append(out, Part{Name: p.name, Pid: p.pid, RSSMiB: rss})
	}
	for _, g := range []struct{ name, sub string }{{"shims", "shims"}, {"pods", "kubepods"}} {
		pids, _ := cgroup{filepath.Join(c.cg.name, g.sub)}.pids()
		sum := Part{Name: fmt.Sprintf("%s (%d processes)", g.name, len(pids))}
		for _, pid := range pids {
			rss, _ := procstat.RSSMiB(pid)
			sum.RSSMiB += rss
		}
		out = append(out, sum)
	}
	return out
}

// Stop stops every part (node parts, then the containers and shims, containerd, the API server,
// etcd last), lets the namespaces go, removes the cgroup and the run directory. It is safe to
// call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		begin := time.Now()
		c.stopErr = c.stop()
		c.stopped = time.Since(begin)
		c.logf("cluster: stopped in %s", c.stopped.Round(time.Millisecond))
	})
	return c.stopErr
}

// StopTime is how long Stop took.
func (c *Cluster) StopTime() time.Duration { return c.stopped }

func (c *Cluster) stop() error {
	var errs []error
	byName := map[string]*process{}
	c.mu.Lock()
	for _, p := range c.procs {
		byName[p.name] = p
	}
	c.mu.Unlock()
	stopAll := func(grace time.Duration, names ...string) {
		var wg sync.WaitGroup
		for _, n := range names {
			if p := byName[n]; p != nil {
				wg.Add(1)
				go func() { defer wg.Done(); p.stop(grace) }()
			}
		}
		wg.Wait()
	}
	stopAll(5*time.Second, "kubelet", "kube-proxy", "coredns", "kube-scheduler", "kube-controller-manager")
	if err := c.cg.kill(15 * time.Second); err != nil {
		errs = append(errs, err)
	}
	stopAll(5*time.Second, "containerd")
	// containerd runs `containerd-shim-runc-v2 ... delete` to clean up the tasks whose shims the
	// cgroup kill ended; under load those outlive it by a moment.
	awaitGone(c.Dir, 10*time.Second)
	if c.fwd != nil {
		c.fwd.close()
	}
	// The API server before etcd: without etcd it takes over 10 s to exit.
	stopAll(15*time.Second, "kube-apiserver")
	stopAll(5*time.Second, "etcd")
	if c.ns != nil {
		c.ns.close()
	}
	if err := c.cg.remove(); err != nil {
		errs = append(errs, err)
	}
	if err := removeRun(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return errors.Join(errs...)
}

// lockRun takes the run's lock, held for the cluster's life: a run directory whose lock can be
// taken belongs to a process that died.
func lockRun(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("cluster: locking %s: %w", dir, err)
	}
	return f, nil
}
