package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/portcullis/portcullis/test/proctest"
)

// requireRootTools ends the test unless it runs as root with the given tools: failing it under
// CI=true, skipping it loudly elsewhere.
func requireRootTools(t *testing.T, tools ...string) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("needs root to run processes as other users")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			fail("needs %s (make netns-tools installs it)", tool)
		}
	}
}

// TestAgentInAPodVolume runs the sidecar as the injector does: as the proxy's UID, with its
// sockets in the root of a pod volume (an emptyDir is root-owned and mode 0777), and an
// application of another UID connecting to the Workload API. The agent used to chmod the volume
// root and exit.
func TestAgentInAPodVolume(t *testing.T) {
	requireRootTools(t, "setpriv")
	bin := proctest.AgentBinary(t)
	base := t.TempDir()
	volume := filepath.Join(base, "pod-volume")
	if err := os.Mkdir(volume, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Dir(base), base, volume} {
		mode := os.FileMode(0o755)
		if dir == volume {
			mode = 0o777
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	agent := proctest.Start(t, "agent", "setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups", "--",
		bin, "agent", "--controlplane", "127.0.0.1:1", "--token-file", filepath.Join(base, "no-token"),
		"--socket-dir", volume, "--socket-mode", "0666", "--no-persist", "--admin-addr", "127.0.0.1:0", "--log-format", "json")
	agent.Wait(t, "agent serving", "workload_api")

	// The application, as another user, reaches the Workload API socket: this test binary,
	// copied where that user may run it, connects (TestHelperConnectUnix).
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(base, "app")
	if err := os.WriteFile(helper, self, 0o755); err != nil {
		t.Fatal(err)
	}
	connect := exec.Command("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "--",
		helper, "-test.run=^TestHelperConnectUnix$")
	connect.Env = append(os.Environ(), "PORTCULLIS_TEST_CONNECT="+filepath.Join(volume, "workload.sock"))
	if out, err := connect.CombinedOutput(); err != nil {
		t.Fatalf("an application of UID 1000 cannot connect to the Workload API socket: %v\n%s", err, out)
	}
	st, err := os.Stat(volume)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o777 {
		t.Errorf("the agent changed the volume root to %v", st.Mode().Perm())
	}
}

// TestHelperConnectUnix is the application of TestAgentInAPodVolume: it connects to the unix
// socket PORTCULLIS_TEST_CONNECT names, and does nothing when run as a test.
func TestHelperConnectUnix(t *testing.T) {
	path := os.Getenv("PORTCULLIS_TEST_CONNECT")
	if path == "" {
		return
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
