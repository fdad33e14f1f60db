package cluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/proctest"
)

// crashChildEnv makes TestCrashChild run: the run directory's parent.
const crashChildEnv = "PORTCULLIS_CLUSTER_CRASH_CHILD"

// TestSweepAfterCrash kills a process whose cluster runs a pod, as a crash or a test timeout
// would: its parts die with it, but the pod's container and its shim survive (containerd
// detaches them by design). The next run's sweep kills them and removes the cgroup and the
// directory; no process is left in its namespaces.
func TestSweepAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Kubernetes cluster")
	}
	RequireParts(t)
	base, err := os.MkdirTemp("", "portcullis-sweep-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v", "-test.timeout=5m")
	child.Env = append(os.Environ(), crashChildEnv+"="+base)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = child.Stdout
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var holder int
	var log []string
	for s := bufio.NewScanner(out); s.Scan(); {
		log = append(log, s.Text())
		if _, err := fmt.Sscanf(s.Text(), "RUNNING %s %d", &dir, &holder); err == nil {
			break
		}
	}
	if dir == "" {
		_ = child.Wait()
		t.Fatalf("the child did not start its cluster:\n%s", strings.Join(log, "\n"))
	}
	// Held open, the namespaces stay (empty) and their inode numbers stay theirs.
	ns, err := openNamespaces(holder)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.close()
	_ = child.Process.Signal(syscall.SIGKILL)
	_ = child.Wait()

	cg := cgroup{filepath.Base(dir)}
	// The parts die with the process (Pdeathsig) at once; the pod's processes stay.
	proctest.Eventually(t, 10*time.Second, func() error {
		if left := processesNaming(dir); len(left) > 0 && !onlyShims(left) {
			return fmt.Errorf("parts still running: %v", left)
		}
		return nil
	}, "the crashed run's parts gone")
	if pids, err := cg.pids(); err != nil || len(pids) == 0 {
		t.Fatalf("no container or shim survived the crash (%v, %v): the sweep has nothing to prove", pids, err)
	}
	if err := sweepStale(base, t.Logf); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, 10*time.Second, func() error {
		if left := append(ns.members(), leftovers(dir)...); len(left) > 0 {
			return fmt.Errorf("left behind:\n%s", strings.Join(left, "\n"))
		}
		return nil
	}, "nothing left of the crashed run")
}

func onlyShims(pids []int) bool {
	for _, pid := range pids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if !strings.HasPrefix(string(comm), "containerd-shim") {
			return false
		}
	}
	return true
}

// TestCrashChild is TestSweepAfterCrash's child: a cluster running a pod, then nothing until
// it is killed.
func TestCrashChild(t *testing.T) {
	base := os.Getenv(crashChildEnv)
	if base == "" {
		t.Skip("the child of TestSweepAfterCrash")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := New(ctx, Options{TempDir: base, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "pause", Image: PauseRef, ImagePullPolicy: corev1.PullNever},
		}},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, time.Minute, func() error {
		p, err := c.Client.CoreV1().Pods("default").Get(ctx, "survivor", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	}, "pod Running")
	fmt.Printf("RUNNING %s %d\n", c.Dir, c.NamespacePID())
	time.Sleep(5 * time.Minute) // killed by the parent long before
}
