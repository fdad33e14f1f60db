//go:build !agentonly

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/proctest"
)

// waitForLog reads JSON log lines from r until one has the message msg, and returns that line's
// attribute attr and a reader for the rest of the log.
func waitForLog(t *testing.T, r io.Reader, msg, attr string) (string, io.Reader) {
	t.Helper()
	type result struct {
		value string
		seen  []string
	}
	found := make(chan result, 1)
	lines := bufio.NewScanner(r)
	go func() {
		var seen []string
		for lines.Scan() {
			seen = append(seen, lines.Text())
			var rec map[string]any
			if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["msg"] == msg {
				v, _ := rec[attr].(string)
				found <- result{v, seen}
				return
			}
		}
		found <- result{"", seen}
	}()
	select {
	case res := <-found:
		if res.value == "" {
			t.Fatalf("log has no %q with %s:\n%s", msg, attr, strings.Join(res.seen, "\n"))
		}
		return res.value, r
	case <-time.After(30 * time.Second):
		t.Fatalf("no %q logged within 30s", msg)
	}
	return "", nil
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestControlPlaneServesAdminAndStopsOnSignal(t *testing.T) {
	bin := proctest.Binary(t)
	configDir, dataDir := t.TempDir(), filepath.Join(t.TempDir(), "data")
	copyDir(t, "../../examples/demo/mesh", configDir)

	cmd := exec.Command(bin, "controlplane", "--config", configDir, "--data-dir", dataDir,
		"--admin-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--authz-addr", "127.0.0.1:0", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	// The admin address is logged once the listener is bound.
	admin, logs := waitForLog(t, stderr, "admin server listening", "addr")
	admin = "http://" + admin
	// Ready needs the CA too, which starts with the first valid mesh.
	_, logs = waitForLog(t, logs, "control plane serving", "xds_addr")
	go func() {
		_, _ = io.Copy(io.Discard, logs)
		exited <- cmd.Wait()
	}()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	// The authorization engine compiles the mesh on its own goroutine, after "serving" is
	// logged: ready follows within moments, not at once.
	proctest.Eventually(t, 10*time.Second, func() error {
		if code, body := get("/readyz"); code != 200 {
			return fmt.Errorf("/readyz = %d: %s", code, body)
		}
		return nil
	}, "the control plane ready")
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `portcullis_config_loads_total{result="ok"} 1`) {
		t.Errorf("/metrics = %d, missing the load counter:\n%s", code, body)
	}
	_, body = get("/debug/mesh")
	var dbg struct {
		Status struct {
			Version  string `json:"version"`
			Problems []any  `json:"problems"`
		} `json:"status"`
		Mesh struct {
			Services []any `json:"services"`
		} `json:"mesh"`
	}
	if err := json.Unmarshal([]byte(body), &dbg); err != nil {
		t.Fatalf("/debug/mesh: %v\n%s", err, body)
	}
	if dbg.Status.Version == "" || len(dbg.Mesh.Services) != 2 || len(dbg.Status.Problems) != 0 {
		t.Errorf("/debug/mesh = %s", body)
	}
	if st, err := os.Stat(dataDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, %v; want 0700", st.Mode().Perm(), err)
	}

	// An invalid edit shows on /debug/mesh and leaves the mesh live and ready.
	if err := os.WriteFile(filepath.Join(configDir, "bad.yaml"), []byte("apiVersion: portcullis.dev/v1alpha1\nkind: Service\nmetadata: {name: x, namespace: demo}\nspec: {portz: []}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = get("/debug/mesh")
		if strings.Contains(body, `"field": "spec.portz"`) && strings.Contains(body, `unknown field`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invalid edit not reported on /debug/mesh:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz after an invalid edit = %d: %s", code, body)
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("control plane did not stop within 5s of SIGTERM")
	}
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
}

func TestControlPlaneNotReadyWithoutValidMesh(t *testing.T) {
	bin := proctest.Binary(t)
	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "mesh.yaml"), []byte("kind: Mesh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "controlplane", "--config", configDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `required flag(s) "data-dir" not set`) {
		t.Fatalf("missing --data-dir: err=%v\n%s", err, out)
	}
}
