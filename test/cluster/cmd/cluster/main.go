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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/cluster"
	"github.com/portcullis/portcullis/test/clustermesh"
	"github.com/portcullis/portcullis/test/kubetest"
)

func main() {
	imagesDir := flag.String("images", "bin/images", "import every *.tar of this directory (make images)")
	bin := flag.String("portcullis", "bin/portcullis", "the portcullis binary that installs the mesh (make build)")
	noMesh := flag.Bool("no-mesh", false, "the cluster alone, without the mesh and the demo")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := watchMake(ctx); err == nil {
			fmt.Fprintln(os.Stderr, "make was interrupted")
			stop()
		}
	}()
	if err := run(ctx, *imagesDir, *bin, *noMesh); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, imagesDir, bin string, noMesh bool) error {
	tarballs, err := filepath.Glob(filepath.Join(imagesDir, "*.tar"))
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	c, err := cluster.New(ctx, cluster.Options{Tarballs: tarballs, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping the cluster")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		if left := c.Leftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "the cluster left behind:\n%s\n", strings.Join(left, "\n"))
			return
		}
		fmt.Printf("stopped in %s; nothing left behind\n", c.StopTime().Round(time.Millisecond))
	}()
	var names []string
	for _, t := range tarballs {
		names = append(names, strings.TrimSuffix(filepath.Base(t), ".tar"))
	}
	fmt.Printf("\nKubernetes %s, one node (%s), ready in %s; images imported: %s.\n", kubetest.KubeVersion, cluster.NodeName,
		c.Timings.Ready.Round(time.Millisecond), strings.Join(names, ", "))
	if noMesh {
		fmt.Printf(clusterHelp, c.Kubeconfig, c.NamespacePID(), filepath.Join(c.Dir, "logs"))
		<-ctx.Done()
		return nil
	}
	demo, err := clustermesh.Install(ctx, clustermesh.Options{Bin: bin, Kubeconfig: c.Kubeconfig, Config: c.Config, Logf: logf})
	if err != nil {
		return err
	}
	// The same local ports as `make demo`, so the same commands work.
	for _, f := range []struct {
		ns, selector string
		local, port  int
	}{
		{clustermesh.DemoNamespace, "app=frontend", 18080, 8080},
		{clustermesh.SystemNamespace, "app.kubernetes.io/name=portcullis-controlplane", 15014, 15014},
		{clustermesh.SystemNamespace, "app.kubernetes.io/name=jaeger", 16686, 16686},
	} {
		pods, err := c.Client.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: f.selector})
		if err != nil || len(pods.Items) == 0 {
			return fmt.Errorf("no pod %s in %s to forward to: %v", f.selector, f.ns, err)
		}
		fw, err := clustermesh.ForwardPort(c.Config, c.Client, f.ns, pods.Items[0].Name, f.local, f.port)
		if err != nil {
			return err
		}
		defer fw.Close()
	}
	fmt.Printf(meshHelp, c.Kubeconfig, demo.ControlPlaneReady.Round(time.Second), demo.DemoReady.Round(time.Second), demo.AdminToken,
		filepath.Join(c.Dir, "logs"))
	<-ctx.Done()
	return nil
}

const clusterHelp = `
  export KUBECONFIG=%s
  kubectl get nodes,pods -A          # kubectl, or any client, with that kubeconfig

Pods use imagePullPolicy: Never or IfNotPresent (there is no registry). Pod and Service IPs
exist inside the cluster's network namespace only:
  nsenter --target %d --net --mount -- curl http://<pod or Service IP>:<port>/
Logs of every part: %s

Ctrl-C stops the cluster and removes everything it made.
`

const meshHelp = `
The mesh is installed as a user installs it (portcullis install --overlay demo): the control
plane at 2 replicas, Jaeger, Redis (Global rate limits), and in namespace demo (labelled for injection) a frontend and two
backends, each with its injected proxy. Control plane ready after %[2]s, demo after %[3]s.

  export KUBECONFIG=%[1]s
  kubectl -n demo get pods,svc            kubectl -n demo get authorizationpolicies -o wide

Forwarded to this machine (as kubectl port-forward does) while this runs: the frontend on
127.0.0.1:18080, the control plane's admin port on 127.0.0.1:15014, Jaeger on 127.0.0.1:16686.
The frontend calls http://backend.demo.svc:8080 in plain HTTP; its proxy makes it mTLS.

Try:
  allowed     curl -s 'http://127.0.0.1:18080/call?path=/api/items'
              200; the backend names its caller: spiffe://demo.portcullis.local/ns/demo/sa/frontend
  denied      curl -si 'http://127.0.0.1:18080/call?path=/debug/vars'      403, with x-portcullis-decision-id
  no token    curl -si 'http://127.0.0.1:18080/call?path=/admin/stats'     401
  JWT         curl -s -H 'Authorization: Bearer %[4]s' \
                'http://127.0.0.1:18080/call?path=/admin/stats'            200
  429         seq 100 | xargs -P 20 -I{} curl -s -o /dev/null -w '%%{http_code}\n' 'http://127.0.0.1:18080/call?path=/api/items' | sort | uniq -c
              about 60 200 and 40 429: each backend's proxy holds a bucket of 20, refilled 10 a second
  Global      for i in 1 2 3 4; do curl -s -o /dev/null -w '%%{http_code} ' -H 'Authorization: Bearer %[4]s' \
                'http://127.0.0.1:18080/call?path=/admin/export'; done
              200 200 200 429: 3 exports a minute per user across both backends and both control
              plane replicas, in deploy/'s Redis

Look:
  bin/portcullis proxy status               what each Envoy ACKed (through the forwarded admin port)
  http://127.0.0.1:15014/debug/mesh         the mesh the control plane built from the CRDs
  http://127.0.0.1:16686                    Jaeger: each request is one trace across both proxies and the Check
  kubectl -n demo edit authorizationpolicy backend-allow-frontend     changes apply within seconds
Logs of every cluster part: %[5]s

Ctrl-C stops the cluster and removes everything it made.
`
