//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/proctest"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// startProc runs the binary with JSON logs until the test ends.
func startProc(t *testing.T, bin string, args ...string) *proctest.Process {
	t.Helper()
	return proctest.Start(t, args[0], bin, append(args, "--log-format", "json")...)
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("portcullis %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestIdentityEndToEnd runs the real binaries: a control plane starts its CA with the mesh's
// trust domain, "token create" makes a join token, an agent gets its SVID and serves it to
// go-spiffe's Workload API client; the CLI rotates and revokes; a mesh with another trust
// domain is refused while the live one stays; a restart reloads the same CA.
func TestIdentityEndToEnd(t *testing.T) {
	bin := proctest.Binary(t)
	configDir, dataDir := t.TempDir(), filepath.Join(t.TempDir(), "data")
	copyDir(t, "../../examples/demo/mesh", configDir)
	cpArgs := []string{"controlplane", "--config", configDir, "--data-dir", dataDir,
		"--admin-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--authz-addr", "127.0.0.1:0", "--svid-ttl", "1m"}
	cp := startProc(t, bin, cpArgs...)
	cpAdmin := "http://" + cp.Wait(t, "admin server listening", "addr")
	addr := cp.Wait(t, "control plane serving", "xds_addr")
	// The authorization engine compiles the mesh on its own goroutine: ready soon after serving.
	proctest.Eventually(t, 10*time.Second, func() error {
		if code, body := httpGet(t, cpAdmin+"/readyz"); code != 200 {
			return fmt.Errorf("/readyz = %d: %s", code, body)
		}
		return nil
	}, "the control plane ready")

	tokenFile := filepath.Join(t.TempDir(), "token")
	run(t, bin, "token", "create", "--data-dir", dataDir, "--namespace", "demo", "--service", "frontend", "--out", tokenFile)
	if st, err := os.Stat(tokenFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v", st.Mode().Perm(), err)
	}
	sockets := filepath.Join(t.TempDir(), "sockets")
	ag := startProc(t, bin, "agent", "--controlplane", addr, "--token-file", tokenFile, "--socket-dir", sockets, "--admin-addr", "127.0.0.1:0")
	agAdmin := "http://" + ag.Wait(t, "admin server listening", "addr")
	want := "spiffe://portcullis.local/ns/demo/sa/frontend"
	if got := ag.Wait(t, "agent ready: SVID available over SDS and the Workload API", "spiffe_id"); got != want {
		t.Fatalf("agent ready with %s, want %s", got, want)
	}
	if code, body := httpGet(t, agAdmin+"/readyz"); code != 200 {
		t.Fatalf("agent /readyz = %d: %s", code, body)
	}
	if _, body := httpGet(t, agAdmin+"/metrics"); !strings.Contains(body, "portcullis_agent_svid_expiry_seconds") {
		t.Error("agent metrics lack the SVID expiry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+filepath.Join(sockets, "workload.sock")))
	if err != nil || svid.ID.String() != want {
		t.Fatalf("Workload API: %v, %v", svid, err)
	}
	if _, body := httpGet(t, cpAdmin+"/metrics"); !strings.Contains(body, `portcullis_ca_svids_issued_total{credential="join_token"} 1`) ||
		!strings.Contains(body, `portcullis_ca_certificate_expiry_seconds{`) {
		t.Errorf("control plane metrics lack issued SVIDs or CA expiry:\n%s", body)
	}

	// CLI: rotate prepares a new root; revoke writes the list the control plane reloads.
	if out := run(t, bin, "ca", "rotate", "--data-dir", dataDir); !strings.Contains(out, ": prepared, signs from ") {
		t.Errorf("ca rotate: %s", out)
	}
	var status struct {
		TrustDomain string `json:"trustDomain"`
		Authorities []struct {
			ID    string `json:"id"`
			Phase string `json:"phase"`
		} `json:"authorities"`
	}
	if err := json.Unmarshal([]byte(run(t, bin, "ca", "status", "--data-dir", dataDir)), &status); err != nil {
		t.Fatal(err)
	}
	if status.TrustDomain != "portcullis.local" || len(status.Authorities) != 2 || status.Authorities[1].Phase != "prepared" {
		t.Errorf("ca status = %+v", status)
	}
	run(t, bin, "ca", "revoke", "--data-dir", dataDir, "--serial", svid.Certificates[0].SerialNumber.Text(16))
	cp.Wait(t, "revocation list reloaded", "msg")

	// A mesh with another trust domain is refused; the live mesh stays.
	originals := map[string][]byte{}
	files, err := filepath.Glob(filepath.Join(configDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		originals[f] = data
		if err := os.WriteFile(f, []byte(strings.ReplaceAll(string(data), "portcullis.local", "other.example")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := httpGet(t, cpAdmin+"/debug/mesh")
		if strings.Contains(body, `is not the CA's trust domain`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trust domain change not refused:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := httpGet(t, cpAdmin+"/readyz"); code != 200 {
		t.Error("not ready after a refused trust domain change")
	}
	for f, data := range originals {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Restart: the same CA (both authorities) comes back.
	cp.Stop()
	cp2 := startProc(t, bin, cpArgs...)
	cp2.Wait(t, "control plane serving", "xds_addr")
	if err := json.Unmarshal([]byte(run(t, bin, "ca", "status", "--data-dir", dataDir)), &status); err != nil || len(status.Authorities) != 2 {
		t.Fatalf("after restart: %+v, %v", status, err)
	}
	// A second control plane on the same data directory is refused: tokens would be reusable.
	out, err := exec.Command(bin, append(cpArgs[:len(cpArgs)-2], "--admin-addr", "127.0.0.1:0")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another control plane is using the data directory") {
		t.Errorf("second control plane on one data dir: %v\n%s", err, out)
	}
}
