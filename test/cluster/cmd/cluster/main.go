package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/test/cluster"
	"github.com/portcullis/portcullis/test/kubetest"
)

func main() {
	imagesDir := flag.String("images", "bin/images", "import every *.tar of this directory (make images)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := watchMake(ctx); err == nil {
			fmt.Fprintln(os.Stderr, "make was interrupted")
			stop()
		}
	}()
	if err := run(ctx, *imagesDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, imagesDir string) error {
	tarballs, err := filepath.Glob(filepath.Join(imagesDir, "*.tar"))
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	c, err := cluster.New(ctx, cluster.Options{Tarballs: tarballs, Logf: logf})
	if err != nil {
		return err
	}
	var names []string
	for _, t := range tarballs {
		names = append(names, strings.TrimSuffix(filepath.Base(t), ".tar"))
	}
	fmt.Printf(`
Kubernetes %s, one node (%s), ready in %s; images imported: %s.

  export KUBECONFIG=%s
  kubectl get nodes,pods -A          # kubectl, or any client, with that kubeconfig

Pods use imagePullPolicy: Never or IfNotPresent (there is no registry). Pod and Service IPs
exist inside the cluster's network namespace only:
  nsenter --target %d --net --mount -- curl http://<pod or Service IP>:<port>/
Logs of every part: %s

Ctrl-C stops the cluster and removes everything it made.
`, kubetest.KubeVersion, cluster.NodeName, c.Timings.Ready.Round(time.Millisecond), strings.Join(names, ", "),
		c.Kubeconfig, c.NamespacePID(), filepath.Join(c.Dir, "logs"))
	<-ctx.Done()
	fmt.Println("stopping the cluster")
	if err := c.Stop(); err != nil {
		return err
	}
	if left := c.Leftovers(); len(left) > 0 {
		return fmt.Errorf("the cluster left behind:\n%s", strings.Join(left, "\n"))
	}
	fmt.Printf("stopped in %s; nothing left behind\n", c.StopTime().Round(time.Millisecond))
	return nil
}
