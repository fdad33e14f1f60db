package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/xds/inject/redirect"
)

// Addresses and ports, all inside the test's namespaces (none on the host). The control plane's
// namespace routes between the pods, as a node does.
const (
	trustDomain    = "netns.test"
	controlPlaneIP = "10.201.0.1"
	frontendIP     = "10.201.1.1"
	backendIP      = "10.201.2.1"
	backendVIP     = "10.96.0.20" // the backend Service's virtual IP: no interface has it
	servicePort    = 8080         // the backend's service port, its application's port too
	directPort     = 9090         // excluded from the redirection on both sides
	agentAdmin     = "127.0.0.1:15021"
	envoyAdmin     = "127.0.0.1:15000"
)

var proxyUID = strconv.Itoa(redirect.ProxyUID)

const meshDocs = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: netns.test
  mtls: {mode: STRICT}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec:
  addresses: [` + backendVIP + `]
  ports: [{name: http, port: 8080}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: backend-1, namespace: demo}
spec: {mode: Transparent, service: backend, address: ` + backendIP + `}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: frontend-1, namespace: demo}
spec: {mode: Transparent, serviceAccount: frontend, address: ` + frontendIP + `}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-callers, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - {name: frontend-reads, from: {principals: ["spiffe://netns.test/ns/demo/sa/frontend"]}, to: {methods: [GET], paths: ["/api/*"]}}
    - {name: self-check, from: {principals: ["spiffe://netns.test/ns/demo/sa/backend"]}, to: {methods: [GET], paths: ["/api/self"]}}
`

func TestTransparentProxyInNetworkNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole mesh in network namespaces")
	}
	requireNetworkNamespaces(t)
	env := newEnvironment(t)
	env.startControlPlane()

	// The redirection the injector gives a pod with the exclusion annotations (its init
	// container's arguments).
	defaults := redirect.Redirect{InboundPort: redirect.InboundPort, OutboundPort: redirect.OutboundPort, ProxyUID: redirect.ProxyUID}
	backendRedirect, frontendRedirect := defaults, defaults
	backendRedirect.ExcludeInboundPorts = []uint16{directPort}
	frontendRedirect.ExcludeOutboundPorts = []uint16{directPort}
	backend := env.startPod("backend", backendIP, backendRedirect)
	frontend := env.startPod("frontend", frontendIP, frontendRedirect)
	env.inNS("backend-app", backend.ns, env.bin, "demo-app", "backend", "--listen", "0.0.0.0:"+strconv.Itoa(servicePort))
	env.inNS("backend-direct-app", backend.ns, env.bin, "demo-app", "backend", "--listen", "0.0.0.0:"+strconv.Itoa(directPort), "--name", "backend-direct")
	backend.waitReady(t)
	frontend.waitReady(t)

	for _, p := range []*pod{backend, frontend} {
		if uid := processUID(t, p.agent.Pid()); uid != proxyUID {
			t.Fatalf("%s agent (and its Envoy) runs as UID %s, want %s", p.name, uid, proxyUID)
		}
	}

	t.Run("the client reaches the service's virtual IP through both Envoys", func(t *testing.T) {
		url := "http://" + backendVIP + ":" + strconv.Itoa(servicePort) + "/api/items"
		// A forged client certificate header must not survive the mesh.
		forged := map[string]string{"X-Forwarded-Client-Cert": "URI=spiffe://netns.test/ns/demo/sa/admin"}
		// EDS may still be converging just after readiness.
		proctest.Eventually(t, 20*time.Second, func() error {
			if r := env.get(t, frontend.ns, url, forged); r.Status != http.StatusOK {
				return fmt.Errorf("%d %s %s", r.Status, r.Err, r.Body)
			}
			return nil
		}, "frontend → backend VIP")
		fBefore, bBefore := frontend.stats(t), backend.stats(t)
		r := env.get(t, frontend.ns, url, forged)
		fAfter, bAfter := frontend.stats(t), backend.stats(t)
		if r.Status != http.StatusOK {
			t.Fatalf("%d %s %s", r.Status, r.Err, r.Body)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(r.Body), &got); err != nil {
			t.Fatalf("%v: %s", err, r.Body)
		}
		if got["service"] != "backend" || got["path"] != "/api/items" {
			t.Errorf("answered by %q for %q, want the backend application for /api/items", got["service"], got["path"])
		}
		// The inbound Envoy replaced the header with the verified peer certificate's URI SAN.
		if want := "spiffe://netns.test/ns/demo/sa/frontend"; got["caller"] != want {
			t.Errorf("backend saw caller %q, want %q (set by its Envoy from the mTLS peer)", got["caller"], want)
		}
		for _, c := range []struct {
			who         string
			before, now map[string]uint64
			stat        string
		}{
			{"frontend", fBefore, fAfter, "listener.0.0.0.0_15001.downstream_cx_total"},
			{"frontend", fBefore, fAfter, "http.outbound_backend_demo.downstream_rq_2xx"},
			{"backend", bBefore, bAfter, "listener.0.0.0.0_15006.http.inbound.downstream_rq_2xx"},
		} {
			if d := c.now[c.stat] - c.before[c.stat]; d != 1 {
				t.Errorf("%s Envoy %s went up by %d for one request, want 1", c.who, c.stat, d)
			}
		}
	})

	t.Run("a service's host name routes any address on its port", func(t *testing.T) {
		// As when DNS answers with something other than the virtual IP: the Host header names the
		// service, so the outbound listener's host routes send the request to its cluster.
		before := frontend.stats(t)
		r := env.get(t, frontend.ns, "http://"+backendIP+":"+strconv.Itoa(servicePort)+"/api/items", map[string]string{"Host": "backend.demo.svc.cluster.local"})
		after := frontend.stats(t)
		var got map[string]string
		if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &got) != nil || got["caller"] != "spiffe://netns.test/ns/demo/sa/frontend" {
			t.Fatalf("Host backend.demo.svc.cluster.local: %d %s %s; want the backend through the mesh", r.Status, r.Err, r.Body)
		}
		if stat := "http.outbound.downstream_rq_2xx"; after[stat]-before[stat] != 1 {
			t.Errorf("%s went up by %d, want 1", stat, after[stat]-before[stat])
		}
	})

	t.Run("authorization denies what the policy does not allow", func(t *testing.T) {
		r := env.get(t, frontend.ns, "http://"+backendVIP+":"+strconv.Itoa(servicePort)+"/admin/users", nil)
		if r.Status != http.StatusForbidden || r.Header.Get("X-Portcullis-Decision-Id") == "" {
			t.Errorf("GET /admin/users: %d %s, decision id %q; want 403 with a decision id", r.Status, r.Err, r.Header.Get("X-Portcullis-Decision-Id"))
		}
	})

	t.Run("a pod reaches its own service through its outbound and inbound listeners", func(t *testing.T) {
		// The service's only endpoint is the calling pod: the outbound Envoy's mTLS connection
		// to the pod's own address must be sent to the inbound listener, not to the application.
		before := backend.stats(t)
		r := env.get(t, backend.ns, "http://"+backendVIP+":"+strconv.Itoa(servicePort)+"/api/self", nil)
		after := backend.stats(t)
		var got map[string]string
		if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &got) != nil {
			t.Fatalf("backend → its own service: %d %s %s", r.Status, r.Err, r.Body)
		}
		if want := "spiffe://netns.test/ns/demo/sa/backend"; got["caller"] != want {
			t.Errorf("caller %q, want %q", got["caller"], want)
		}
		for _, stat := range []string{"http.outbound_backend_demo.downstream_rq_2xx", "listener.0.0.0.0_15006.http.inbound.downstream_rq_2xx"} {
			if d := after[stat] - before[stat]; d != 1 {
				t.Errorf("%s went up by %d, want 1", stat, d)
			}
		}
		// The application calling its own pod address stays inside the pod, as loopback does.
		r = env.get(t, backend.ns, "http://"+backendIP+":"+strconv.Itoa(servicePort)+"/api/items", nil)
		if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &got) != nil || got["caller"] != "" {
			t.Errorf("backend → its own pod address: %d %s %s; want the application directly", r.Status, r.Err, r.Body)
		}
	})

	t.Run("a client outside the mesh cannot bypass the backend's Envoy", func(t *testing.T) {
		// Plaintext from the control plane's namespace straight to the backend pod: redirected to
		// the STRICT inbound listener, which wants mTLS.
		before := backend.stats(t)
		r := env.get(t, env.cpNS, "http://"+backendIP+":"+strconv.Itoa(servicePort)+"/api/items", nil)
		after := backend.stats(t)
		if r.Err == "" {
			t.Errorf("plaintext request to the backend pod answered %d %s; want the connection refused by its Envoy", r.Status, r.Body)
		}
		if stat := "listener.0.0.0.0_15006.downstream_cx_total"; after[stat] == before[stat] {
			t.Errorf("%s did not count the connection: it was not redirected to the inbound listener", stat)
		}
	})

	t.Run("excluded ports bypass both proxies", func(t *testing.T) {
		fBefore, bBefore := frontend.stats(t), backend.stats(t)
		r := env.get(t, frontend.ns, "http://"+backendIP+":"+strconv.Itoa(directPort)+"/api/items", nil)
		fAfter, bAfter := frontend.stats(t), backend.stats(t)
		var got map[string]string
		if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &got) != nil || got["service"] != "backend-direct" {
			t.Fatalf("GET :%d: %d %s %s; want the direct application", directPort, r.Status, r.Err, r.Body)
		}
		if got["caller"] != "" {
			t.Errorf("caller %q on an excluded port: no Envoy should have been involved", got["caller"])
		}
		if stat := "listener.0.0.0.0_15001.downstream_cx_total"; fAfter[stat] != fBefore[stat] {
			t.Errorf("frontend %s changed on an excluded port", stat)
		}
		if stat := "listener.0.0.0.0_15006.downstream_cx_total"; bAfter[stat] != bBefore[stat] {
			t.Errorf("backend %s changed on an excluded port", stat)
		}
	})

	t.Run("other destinations pass through the outbound listener untouched", func(t *testing.T) {
		before := frontend.stats(t)
		r := env.get(t, frontend.ns, "http://"+env.cpAdmin+"/healthz", nil)
		after := frontend.stats(t)
		if r.Status != http.StatusOK {
			t.Fatalf("GET control plane /healthz from the frontend: %d %s %s", r.Status, r.Err, r.Body)
		}
		if stat := "tcp.passthrough.downstream_cx_total"; after[stat]-before[stat] != 1 {
			t.Errorf("%s went up by %d, want 1", stat, after[stat]-before[stat])
		}
	})
}

// requireNetworkNamespaces ends the test when it cannot create namespaces: a failure under
// CI=true (CI runs as root with netns-tools installed), a loud skip elsewhere.
func requireNetworkNamespaces(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "iptables-restore", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "the network namespace test needs " + strings.Join(missing, ", ") + " (run as root; `make netns-tools` installs the tools)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: this test must run)", msg)
	}
	t.Skipf("SKIPPING THE TRANSPARENT-MODE NETWORK NAMESPACE TEST: %s", msg)
}

// environment is the test's namespaces, files and control plane.
type environment struct {
	t                *testing.T
	bin, envoy       string
	work             string
	prefix           string // of the namespaces' names
	cpNS             string
	configDir        string
	dataDir          string
	xdsAddr, cpAdmin string
}

func newEnvironment(t *testing.T) *environment {
	t.Helper()
	e := &environment{t: t, prefix: "pcn-" + strconv.Itoa(os.Getpid()) + "-"}
	// The proxy runs as another user: its binaries, token and socket directory must be
	// reachable by it, so the work directory is searchable (t.TempDir's parent is not).
	work, err := os.MkdirTemp("", "portcullis-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(work) })
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	e.work = work
	e.bin = e.expose(proctest.Binary(t))
	e.envoy = e.expose(envoytest.Require(t))
	e.configDir, e.dataDir = filepath.Join(work, "mesh"), filepath.Join(work, "data")
	if err := os.Mkdir(e.configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.configDir, "mesh.yaml"), []byte(meshDocs), 0o600); err != nil {
		t.Fatal(err)
	}
	e.network()
	return e
}

// expose links (or copies) a binary into the work directory, where the proxy's user can run it.
func (e *environment) expose(path string) string {
	e.t.Helper()
	dst := filepath.Join(e.work, filepath.Base(path))
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		e.t.Fatal(err)
	}
	if os.Link(resolved, dst) == nil {
		return dst
	}
	src, err := os.Open(resolved)
	if err != nil {
		e.t.Fatal(err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		e.t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		e.t.Fatal(err)
	}
	return dst
}

// network creates three namespaces: the control plane's (10.201.0.1 on its loopback, routing
// between the pods) and one per pod, each joined to it by a veth pair.
func (e *environment) network() {
	e.t.Helper()
	e.removeStale()
	e.cpNS = e.prefix + "cp"
	for _, ns := range []string{e.cpNS, e.prefix + "frontend", e.prefix + "backend"} {
		e.run("ip", "netns", "add", ns)
		// Deleting the namespace removes its interfaces and iptables rules; registered before
		// any process starts, it runs after they have stopped.
		e.t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				e.t.Errorf("deleting namespace %s: %v %s", ns, err, out)
			}
		})
		e.run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	e.run("ip", "-n", e.cpNS, "addr", "add", controlPlaneIP+"/32", "dev", "lo")
	e.run("ip", "netns", "exec", e.cpNS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	for _, p := range []struct{ name, ip string }{{"frontend", frontendIP}, {"backend", backendIP}} {
		ns, gw := e.prefix+p.name, strings.TrimSuffix(p.ip, ".1")+".254"
		e.run("ip", "-n", e.cpNS, "link", "add", p.name, "type", "veth", "peer", "name", "eth0", "netns", ns)
		e.run("ip", "-n", e.cpNS, "addr", "add", gw+"/24", "dev", p.name)
		e.run("ip", "-n", e.cpNS, "link", "set", p.name, "up")
		e.run("ip", "-n", ns, "addr", "add", p.ip+"/24", "dev", "eth0")
		e.run("ip", "-n", ns, "link", "set", "eth0", "up")
		e.run("ip", "-n", ns, "route", "add", "default", "via", gw)
	}
}

var staleNS = regexp.MustCompile(`^pcn-(\d+)-`)

// removeStale deletes namespaces left by a run of this test that was killed before its cleanup.
func (e *environment) removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		e.t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		m := staleNS.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); syscall.Kill(pid, 0) == syscall.ESRCH {
			e.t.Logf("removing namespace %s left by an earlier run", name)
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// run runs a command to completion, failing the test with its output.
func (e *environment) run(name string, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs a long-lived process in a namespace until the test ends.
func (e *environment) inNS(name, ns string, args ...string) *proctest.Process {
	e.t.Helper()
	return proctest.Start(e.t, name, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

func (e *environment) startControlPlane() {
	e.t.Helper()
	cp := e.inNS("controlplane", e.cpNS, e.bin, "controlplane", "--log-format", "json",
		"--config", e.configDir, "--data-dir", e.dataDir, "--admin-addr", controlPlaneIP+":0",
		"--xds-addr", controlPlaneIP+":0", "--authz-addr", controlPlaneIP+":0", "--svid-ttl", "10m")
	e.xdsAddr = cp.Wait(e.t, "control plane serving", "xds_addr")
	e.cpAdmin = cp.Wait(e.t, "admin server listening", "addr")
}

// pod is one workload's network namespace: redirection, agent and Envoy.
type pod struct {
	name, ns string
	env      *environment
	agent    *proctest.Process
}

// startPod installs the redirection with the init container's command, then runs the agent
// (Transparent mode, joined with a token) and its Envoy as the proxy's UID, as the injected
// sidecar does.
func (e *environment) startPod(name, ip string, rd redirect.Redirect) *pod {
	e.t.Helper()
	p := &pod{name: name, ns: e.prefix + name, env: e}
	e.t.Logf("%s: %s", name, e.run("ip", append([]string{"netns", "exec", p.ns, e.bin, "init-iptables"}, rd.Args()...)...))
	dir := filepath.Join(e.work, name)
	token := filepath.Join(e.work, name+".token")
	e.run(e.bin, "token", "create", "--data-dir", e.dataDir, "--namespace", "demo", "--service", name, "--out", token)
	if err := os.Mkdir(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	for _, f := range []string{dir, token} {
		if err := os.Chown(f, redirect.ProxyUID, redirect.ProxyUID); err != nil {
			e.t.Fatal(err)
		}
	}
	p.agent = e.inNS(name+"-agent", p.ns, "setpriv", "--reuid", proxyUID, "--regid", proxyUID, "--clear-groups", "--pdeathsig", "SIGKILL", "--",
		e.bin, "agent", "--log-format", "json", "--controlplane", e.xdsAddr, "--token-file", token, "--socket-dir", dir,
		"--admin-addr", agentAdmin, "--envoy-path", e.envoy, "--envoy-admin-addr", envoyAdmin, "--envoy-concurrency", "1",
		"--workload", name+"-1", "--mode", "Transparent", "--address", ip)
	return p
}

// waitReady waits for the agent's /readyz: an SVID, and Envoy LIVE with its first configuration.
func (p *pod) waitReady(t *testing.T) {
	t.Helper()
	proctest.Eventually(t, 45*time.Second, func() error {
		select {
		case <-p.agent.Exited():
			t.Fatalf("%s agent exited", p.name)
		default:
		}
		if r := p.env.get(t, p.ns, "http://"+agentAdmin+"/readyz", nil); r.Status != http.StatusOK {
			return fmt.Errorf("%d %s %s", r.Status, r.Err, r.Body)
		}
		return nil
	}, p.name+" ready")
}

// stats returns the pod's Envoy counters and gauges.
func (p *pod) stats(t *testing.T) map[string]uint64 {
	t.Helper()
	r := p.env.get(t, p.ns, "http://"+envoyAdmin+"/stats", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("%s Envoy /stats: %d %s", p.name, r.Status, r.Err)
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(r.Body, "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if n, err := strconv.ParseUint(value, 10, 64); ok && err == nil {
			out[name] = n
		}
	}
	return out
}

func processUID(t *testing.T, pid int) string {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(v)[0]
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return ""
}

// The HTTP client runs as its own process in a namespace: this test binary again, with the request
// in clientEnv. It is a plain client — no proxy settings, an empty environment — running as root,
// an application's UID, so the namespace's redirection applies to it.
const clientEnv = "PORTCULLIS_NETNS_CLIENT_REQUEST"

type request struct {
	URL    string            `json:"url"`
	Header map[string]string `json:"header,omitempty"`
}

type response struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
	Err    string      `json:"err,omitempty"`
}

func TestMain(m *testing.M) {
	if raw := os.Getenv(clientEnv); raw != "" {
		os.Exit(client(raw))
	}
	os.Exit(m.Run())
}

func client(raw string) int {
	var req request
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var resp response
	if err := resp.fetch(req); err != nil {
		resp.Err = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(resp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

func (r *response) fetch(req request) error {
	hr, err := http.NewRequest(http.MethodGet, req.URL, nil)
	if err != nil {
		return err
	}
	for k, v := range req.Header {
		hr.Header.Set(k, v)
	}
	hr.Host = hr.Header.Get("Host")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r.Status, r.Header, r.Body = resp.StatusCode, resp.Header, string(body)
	return err
}

// get runs the client in namespace ns.
func (e *environment) get(t *testing.T, ns, url string, header map[string]string) response {
	t.Helper()
	raw, err := json.Marshal(request{URL: url, Header: header})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, self)
	// No exit delay when the test binary is built with -race.
	cmd.Env = []string{clientEnv + "=" + string(raw), "GORACE=atexit_sleep_ms=0"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var resp response
	if err == nil {
		err = json.Unmarshal(out, &resp)
	}
	if err != nil {
		t.Fatalf("client in %s: %v\n%s", ns, errors.Join(err, ctx.Err()), stderr.String())
	}
	return resp
}
