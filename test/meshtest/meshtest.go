package meshtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/proctest"
)

// Cluster is one local mesh: its documents, the control plane, and the addresses the proxies'
// bootstraps name.
type Cluster struct {
	t           testing.TB
	TrustDomain string
	Bin         string // the portcullis binary
	AgentBin    string // the sidecar build (agent only), which agents run as they do when deployed
	Envoy       string // the Envoy binary
	Work        string // a directory removed when the test ends
	ConfigDir   string // the mesh documents
	DataDir     string // the control plane's state (CA, tokens, registrations)
	XDSAddr     string
	AuthzAddr   string
	CPAdmin     string // the control plane's admin address, once started
	CP          *proctest.Process
}

// New prepares a cluster with trust domain td. It skips in -short mode: it runs real processes.
func New(t testing.TB, td string) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the whole mesh")
	}
	c := &Cluster{t: t, TrustDomain: td, Bin: proctest.Binary(t), AgentBin: proctest.AgentBinary(t), Envoy: envoytest.Require(t), Work: t.TempDir()}
	c.ConfigDir = filepath.Join(c.Work, "mesh")
	c.DataDir = filepath.Join(c.Work, "data")
	if err := os.MkdirAll(c.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Fixed for the cluster's life: proxies' bootstraps name the control plane's address, and
	// the control plane names the authorization service's.
	c.XDSAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	c.AuthzAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	return c
}

// Write replaces a mesh document file atomically, as an editor does.
func (c *Cluster) Write(name, content string) {
	c.t.Helper()
	tmp := filepath.Join(c.ConfigDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.ConfigDir, name)); err != nil {
		c.t.Fatal(err)
	}
}

// StartControlPlane starts (or restarts) the control plane on the cluster's fixed addresses,
// its proxies calling the separate authorization service (StartAuthz) at AuthzAddr.
// SVIDs live 10 minutes unless extra flags (which come last, so they win) say otherwise.
func (c *Cluster) StartControlPlane(extra ...string) {
	c.t.Helper()
	c.startControlPlane(append([]string{"--external-authz", c.AuthzAddr,
		"--external-authz-id", "spiffe://" + c.TrustDomain + "/ns/portcullis-system/sa/authz"}, extra...))
}

// StartControlPlaneWithAuthz starts (or restarts) the control plane serving authorization
// itself on AuthzAddr, as a single process does by default.
func (c *Cluster) StartControlPlaneWithAuthz(extra ...string) {
	c.t.Helper()
	c.startControlPlane(append([]string{"--authz-addr", c.AuthzAddr}, extra...))
}

func (c *Cluster) startControlPlane(extra []string) {
	c.t.Helper()
	args := append([]string{"controlplane", "--log-format", "json",
		"--config", c.ConfigDir, "--data-dir", c.DataDir, "--admin-addr", "127.0.0.1:0",
		"--xds-addr", c.XDSAddr, "--svid-ttl", "10m"}, extra...)
	c.CP = proctest.Start(c.t, "controlplane", c.Bin, args...)
	c.CP.Wait(c.t, "control plane serving", "xds_addr")
	c.CPAdmin = c.CP.Wait(c.t, "admin server listening", "addr")
}

// Token creates a join token file for a workload identity.
func (c *Cluster) Token(namespace, service string) string {
	c.t.Helper()
	file := filepath.Join(c.Work, namespace+"-"+service+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".token")
	out, err := exec.Command(c.Bin, "token", "create", "--data-dir", c.DataDir, "--namespace", namespace,
		"--service", service, "--out", file).CombinedOutput()
	if err != nil {
		c.t.Fatalf("token create: %v\n%s", err, out)
	}
	return file
}

// Agent is a running portcullis agent (with Envoy when it has a workload).
type Agent struct {
	P       *proctest.Process
	Sockets string // the agent's socket directory (SDS, Workload API)
	Admin   string // the agent's admin address
	Inbound int    // the proxy's inbound port (StartProxy)
}

// StartAgent runs an agent for namespace/service with extra flags and waits for its admin port.
func (c *Cluster) StartAgent(name, namespace, service string, extra ...string) *Agent {
	c.t.Helper()
	sockets := filepath.Join(c.Work, name)
	args := append([]string{"agent", "--log-format", "json", "--controlplane", c.XDSAddr,
		"--token-file", c.Token(namespace, service), "--socket-dir", sockets, "--admin-addr", "127.0.0.1:0"}, extra...)
	a := &Agent{P: proctest.Start(c.t, name, c.AgentBin, args...), Sockets: sockets}
	a.Admin = a.P.Wait(c.t, "admin server listening", "addr")
	return a
}

// StartProxy runs an agent with an Envoy for instance name of service in namespace: inbound on
// a free port to the application on appPort, and "service=port" outbound upstreams.
func (c *Cluster) StartProxy(name, namespace, service string, appPort int, upstreams []string, extra ...string) *Agent {
	c.t.Helper()
	inbound := proctest.FreePort(c.t)
	args := []string{"--envoy-path", c.Envoy, "--workload", name, "--service", service,
		"--inbound-port", strconv.Itoa(inbound), "--app-port", strconv.Itoa(appPort)}
	for _, u := range upstreams {
		args = append(args, "--upstream", u)
	}
	a := c.StartAgent(name, namespace, service, append(args, extra...)...)
	a.Inbound = inbound
	return a
}

// WaitReady waits until the agent's /readyz answers 200 (SVID and, with a proxy, Envoy LIVE).
func (a *Agent) WaitReady(t testing.TB) {
	t.Helper()
	proctest.Eventually(t, 60*time.Second, func() error {
		code, body, err := Get("http://" + a.Admin + "/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	}, a.P.Name+" ready")
}

// StartAuthz runs the authorization service on the cluster's authorization address with its
// identity from agent (whose SVID must be ready), and returns it with its admin address.
func (c *Cluster) StartAuthz(agent *Agent, extra ...string) (*proctest.Process, string) {
	c.t.Helper()
	args := append([]string{"authz", "--log-format", "json", "--config", c.ConfigDir,
		"--listen", c.AuthzAddr, "--admin-addr", "127.0.0.1:0",
		"--workload-api-socket", agent.Sockets + "/workload.sock"}, extra...)
	p := proctest.Start(c.t, "authz", c.Bin, args...)
	return p, p.Wait(c.t, "authz server listening", "admin_addr")
}

// Portcullis runs a CLI command and returns its output.
func (c *Cluster) Portcullis(args ...string) string {
	c.t.Helper()
	out, err := exec.Command(c.Bin, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("portcullis %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Synced reports whether the control plane shows every node connected with every resource
// type ACKed at the current version (portcullis proxy status).
func (c *Cluster) Synced(nodes ...string) error {
	status := c.Portcullis("proxy", "status", "--admin-addr", c.CPAdmin)
	for _, node := range nodes {
		line := LineOf(status, node)
		if !strings.Contains(line, " yes ") || strings.Count(line, "yes") < 2 {
			return fmt.Errorf("%s not connected and synced:\n%s", node, status)
		}
	}
	return nil
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// Get requests url and returns the status and body.
func Get(url string) (int, string, error) {
	return Do(http.MethodGet, url, nil)
}

// Do sends a request without a body and returns the status and body.
func Do(method, url string, header http.Header) (int, string, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// LineOf returns the first line of text that starts with prefix, or "".
func LineOf(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// GrepLines returns the lines of text that contain substr.
func GrepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ServicesDoc is the Services of the tests' two-tier mesh: frontend and backend in namespace,
// one HTTP port each (their applications' ports in local mode).
func ServicesDoc(namespace string, frontendPort, backendPort int) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: frontend, namespace: %[1]s}
spec: {ports: [{name: http, port: %[2]d}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: %[1]s}
spec: {ports: [{name: http, port: %[3]d}]}
`, namespace, frontendPort, backendPort)
}
