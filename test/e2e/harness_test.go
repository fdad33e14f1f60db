package e2e

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

const trustDomain = "e2e.test"

// cluster is one local mesh: control plane, authorization service and agents.
type cluster struct {
	t         *testing.T
	bin       string
	envoy     string
	work      string
	configDir string
	dataDir   string
	xdsAddr   string
	authzAddr string
	cpAdmin   string
	cp        *proctest.Process
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the whole mesh")
	}
	c := &cluster{t: t, bin: proctest.Binary(t), envoy: envoytest.Require(t), work: t.TempDir()}
	c.configDir = filepath.Join(c.work, "mesh")
	c.dataDir = filepath.Join(c.work, "data")
	if err := os.MkdirAll(c.configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Fixed for the cluster's life: proxies' bootstraps name the control plane's address, and
	// the control plane names the authorization service's.
	c.xdsAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	c.authzAddr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	return c
}

// write replaces a mesh document file atomically, as an editor does.
func (c *cluster) write(name, content string) {
	c.t.Helper()
	tmp := filepath.Join(c.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.configDir, name)); err != nil {
		c.t.Fatal(err)
	}
}

// startControlPlane starts (or restarts) the control plane on the cluster's fixed addresses.
func (c *cluster) startControlPlane() {
	c.t.Helper()
	c.cp = proctest.Start(c.t, "controlplane", c.bin, "controlplane", "--log-format", "json",
		"--config", c.configDir, "--data-dir", c.dataDir, "--admin-addr", "127.0.0.1:0",
		"--xds-addr", c.xdsAddr, "--external-authz", c.authzAddr,
		"--external-authz-id", "spiffe://"+trustDomain+"/ns/portcullis-system/sa/authz",
		"--svid-ttl", "10m")
	c.cp.Wait(c.t, "control plane serving", "xds_addr")
	c.cpAdmin = c.cp.Wait(c.t, "admin server listening", "addr")
}

// token creates a join token file for a workload identity.
func (c *cluster) token(namespace, service string) string {
	c.t.Helper()
	file := filepath.Join(c.work, namespace+"-"+service+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".token")
	out, err := exec.Command(c.bin, "token", "create", "--data-dir", c.dataDir, "--namespace", namespace,
		"--service", service, "--out", file).CombinedOutput()
	if err != nil {
		c.t.Fatalf("token create: %v\n%s", err, out)
	}
	return file
}

// agent is a running portcullis agent (with Envoy when it has a workload).
type agent struct {
	p       *proctest.Process
	sockets string
	admin   string
}

// startAgent runs an agent for namespace/service with extra flags and waits for its admin port.
func (c *cluster) startAgent(name, namespace, service string, extra ...string) *agent {
	c.t.Helper()
	sockets := filepath.Join(c.work, name)
	args := append([]string{"agent", "--log-format", "json", "--controlplane", c.xdsAddr,
		"--token-file", c.token(namespace, service), "--socket-dir", sockets, "--admin-addr", "127.0.0.1:0"}, extra...)
	a := &agent{p: proctest.Start(c.t, name, c.bin, args...), sockets: sockets}
	a.admin = a.p.Wait(c.t, "admin server listening", "addr")
	return a
}

// waitReady waits until the agent's /readyz answers 200 (SVID and, with a proxy, Envoy LIVE).
func (a *agent) waitReady(t *testing.T) {
	t.Helper()
	proctest.Eventually(t, 60*time.Second, func() error {
		code, body, err := get("http://" + a.admin + "/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	}, a.p.Name+" ready")
}

// portcullis runs a CLI command and returns its output.
func (c *cluster) portcullis(args ...string) string {
	c.t.Helper()
	out, err := exec.Command(c.bin, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("portcullis %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func get(url string) (int, string, error) {
	return do(http.MethodGet, url, nil)
}

func do(method, url string, header http.Header) (int, string, error) {
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

func startProc(t *testing.T, c *cluster, name string, args ...string) *proctest.Process {
	t.Helper()
	return proctest.Start(t, name, c.bin, args...)
}
