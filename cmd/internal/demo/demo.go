package demo

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/authz/ratelimit"
	"github.com/portcullis/portcullis/cmd/internal/controlplane"
	"github.com/portcullis/portcullis/examples"
	"github.com/portcullis/portcullis/examples/demoapp"
	"github.com/portcullis/portcullis/examples/demoidp"
	"github.com/portcullis/portcullis/telemetry/traceview"
)

// The demo's fixed loopback addresses; examples/demo/mesh names the workload ports.
const (
	demoFrontendApp   = "127.0.0.1:18080"
	demoBackendApp    = "127.0.0.1:18090"
	demoBackendMesh   = "127.0.0.1:15102"
	demoFrontendAdmin = "127.0.0.1:15121"
	demoBackendAdmin  = "127.0.0.1:15122"
	// demoRedis holds the buckets of the demo's Global limit.
	demoRedis = "127.0.0.1:16379"
)

// Config is what the demo runs with; cmd/portcullis fills it from flags.
type Config struct {
	Version                       string
	Out                           io.Writer // what to try, where to look
	EnvoyPath                     string
	JaegerPath                    string // "" runs without traces
	JaegerUI                      string // the Jaeger UI's build (make jaeger); "" serves Jaeger's placeholder page
	RedisPath                     string // redis-server for the Global limit; "" runs it without (its failure mode: open)
	WorkDir                       string // "" is a temporary directory, removed at the end
	AdminAddr, XDSAddr, AuthzAddr string
}

// Run runs the demo until ctx ends, or until the process that started it is interrupted
// without passing the signal on (make, see watchParent).
func Run(ctx context.Context, f Config) error {
	out := f.Out
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go watchParent(ctx, func(reason string) {
		fmt.Fprintf(out, "\nStopping: %s.\n", reason)
		cancel()
	})
	envoy, err := exec.LookPath(f.EnvoyPath)
	if err != nil {
		return fmt.Errorf("demo needs Envoy (make envoy, then --envoy-path .cache/bin/envoy): %w", err)
	}
	work := f.WorkDir
	if work == "" {
		dir, err := os.MkdirTemp("", "portcullis-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		work = dir
	}
	configDir, dataDir := filepath.Join(work, "mesh"), filepath.Join(work, "data")
	idp, err := writeMesh(configDir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Agents run from the sidecar build beside this binary (make build), as in a real mesh.
	agentBin := self
	if sidecar := filepath.Join(filepath.Dir(self), "portcullis-agent"); fileExists(sidecar) {
		agentBin = sidecar
	}
	cpLog, err := os.OpenFile(filepath.Join(work, "controlplane.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer cpLog.Close()
	decisionLog := filepath.Join(work, "decisions.log")

	fmt.Fprintf(out, "Starting the Portcullis demo in %s ...\n", work)
	group, gctx := errgroup.WithContext(ctx)
	jaegerQuery := ""
	if f.JaegerPath != "" {
		if jaegerQuery, err = startDemoJaeger(gctx, group, f.JaegerPath, f.JaegerUI, work); err != nil {
			return err
		}
	}
	var redis ratelimit.Redis
	if f.RedisPath != "" {
		if err := startDemoRedis(gctx, group, f.RedisPath, work); err != nil {
			return err
		}
		redis.Addr = demoRedis
	}
	cp, err := controlplane.New(controlplane.Config{
		Version: f.Version, Logger: slog.New(slog.NewTextHandler(cpLog, nil)), Stdout: io.Discard,
		ConfigDir: configDir, DataDir: dataDir, AdminAddr: f.AdminAddr, XDSAddr: f.XDSAddr, AuthzAddr: f.AuthzAddr,
		DecisionLog: decisionLog, JaegerQueryURL: jaegerQuery, RateLimit: redis,
	})
	if err != nil {
		return err
	}
	group.Go(func() error { return cp.Run(gctx) })
	group.Go(func() error { return demoapp.Serve(gctx, demoBackendApp, demoapp.Backend("backend")) })
	group.Go(func() error { return demoapp.Serve(gctx, demoFrontendApp, demoapp.Frontend("http://127.0.0.1:19001")) })
	group.Go(func() error {
		if err := waitHTTP(gctx, "http://"+f.AdminAddr+"/readyz", 60*time.Second); err != nil {
			return fmt.Errorf("control plane not ready (see %s): %w", cpLog.Name(), err)
		}
		for _, w := range []struct{ name, service, admin string }{
			{"backend-1", "backend", demoBackendAdmin},
			{"frontend-1", "frontend", demoFrontendAdmin},
		} {
			if err := startDemoAgent(gctx, group, self, agentBin, envoy, work, dataDir, f.XDSAddr, w.name, w.service, w.admin); err != nil {
				return err
			}
		}
		for _, admin := range []string{demoBackendAdmin, demoFrontendAdmin} {
			if err := waitHTTP(gctx, "http://"+admin+"/readyz", 60*time.Second); err != nil {
				return fmt.Errorf("agent at %s not ready (logs in %s): %w", admin, work, err)
			}
		}
		token, err := idp.Token("alice", []string{"admin"}, 24*time.Hour)
		if err != nil {
			return err
		}
		return printDemoHelp(out, demoHelp{Work: work, Admin: f.AdminAddr, Token: token, Jaeger: jaegerQuery,
			CLI: cliCommand(self, f.AdminAddr), Redis: redis.Addr != ""})
	})
	err = group.Wait()
	if ctx.Err() != nil {
		fmt.Fprintln(out, "\nDemo stopped.")
		return nil
	}
	return err
}

// cliCommand is how the printed commands run this binary: as the user started it (./bin/portcullis
// from the repository, which `make build` does not put on PATH), with the admin address when it
// is not the default.
func cliCommand(self, admin string) string {
	name := self
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, self); err == nil && !strings.HasPrefix(rel, "..") {
			name = "./" + rel
		}
	}
	if onPath, err := exec.LookPath("portcullis"); err == nil && sameFile(onPath, self) {
		name = "portcullis"
	}
	if admin != controlplane.DefaultAdminAddr {
		name += " --admin-addr " + admin
	}
	return name
}

func sameFile(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// startDemoAgent creates a join token and runs an agent with its Envoy for a demo workload,
// stopped (SIGTERM) when ctx ends.
func startDemoAgent(ctx context.Context, group *errgroup.Group, self, agentBin, envoy, work, dataDir, xdsAddr, name, service, admin string) error {
	token := filepath.Join(work, name+".token")
	if out, err := exec.CommandContext(ctx, self, "token", "create", "--data-dir", dataDir, "--namespace", "demo",
		"--service", service, "--out", token).CombinedOutput(); err != nil {
		return fmt.Errorf("token for %s: %v: %s", name, err, out)
	}
	cmd := exec.CommandContext(ctx, agentBin, "agent", "--controlplane", xdsAddr, "--token-file", token,
		"--socket-dir", filepath.Join(work, name), "--admin-addr", admin,
		"--envoy-path", envoy, "--workload", name, "--envoy-concurrency", "1")
	return startChild(ctx, group, "agent "+name, filepath.Join(work, name+".log"), cmd)
}

// startChild starts a demo process with its output in logPath and waits for it in group. It
// runs in a process group of its own, so a Ctrl-C reaches the demo alone, which stops its
// children in order (SIGTERM when ctx ends) and says so; a process that exits before ctx
// ends is an error that stops the demo.
func startChild(ctx context.Context, group *errgroup.Group, name, logPath string, cmd *exec.Cmd) error {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Pdeathsig: a demo killed without cleanup still takes its children with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	group.Go(func() error {
		defer logFile.Close()
		err := cmd.Wait()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s exited (see %s): %v", name, logPath, err)
	})
	return nil
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", resp.Status, body)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return last
}

// WriteMesh writes the demo's documents into dir, with the key set of a new demo issuer as the
// JWTProvider's jwks.json: the mesh a control plane started by hand loads without a warning.
func WriteMesh(dir string) error {
	_, err := writeMesh(dir)
	return err
}

// writeMesh writes the documents and the key set of a new issuer, and returns the issuer.
func writeMesh(dir string) (*demoidp.IDP, error) {
	if err := writeDemoMesh(dir); err != nil {
		return nil, err
	}
	idp, err := demoidp.New()
	if err != nil {
		return nil, err
	}
	jwks, err := idp.JWKS()
	if err != nil {
		return nil, err
	}
	// The demo's JWTProvider reads the key set from this file.
	if err := os.WriteFile(filepath.Join(dir, "jwks.json"), jwks, 0o600); err != nil {
		return nil, err
	}
	return idp, nil
}

// writeDemoMesh copies the embedded demo documents into dir.
func writeDemoMesh(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fs.WalkDir(examples.DemoMesh, "demo/mesh", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := examples.DemoMesh.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o600)
	})
}

type demoHelp struct {
	Work, Admin, Token, Jaeger, CLI string
	Redis                           bool
}

// Jaeger's loopback addresses in the demo; examples/demo/mesh exports to demoOTLP.
const (
	demoOTLP        = "127.0.0.1:4317"
	demoJaegerQuery = "127.0.0.1:16686"
	demoJaegerGRPC  = "127.0.0.1:16685"
)

// startDemoRedis runs redis-server on loopback for the Global limit's buckets: no persistence,
// nothing written but its log, and waits until it answers.
func startDemoRedis(ctx context.Context, group *errgroup.Group, bin, work string) error {
	_, port, _ := strings.Cut(demoRedis, ":")
	cmd := exec.CommandContext(ctx, bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", work)
	if err := startChild(ctx, group, "redis", filepath.Join(work, "redis.log"), cmd); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", demoRedis, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis not answering on %s (see %s): %w", demoRedis, filepath.Join(work, "redis.log"), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startDemoJaeger runs Jaeger with in-memory storage on loopback, serving the UI's build when
// given, and returns its URL.
func startDemoJaeger(ctx context.Context, group *errgroup.Group, bin, ui, work string) (string, error) {
	cfg := filepath.Join(work, "jaeger.yaml")
	if ui != "" {
		abs, err := filepath.Abs(ui)
		if err != nil {
			return "", err
		}
		if !fileExists(filepath.Join(abs, "index.html")) {
			return "", fmt.Errorf("demo: --jaeger-ui %s: no index.html (make jaeger builds the UI)", ui)
		}
		ui = abs
	}
	if err := os.WriteFile(cfg, []byte(traceview.JaegerConfig(demoOTLP, demoJaegerQuery, demoJaegerGRPC, ui)), 0o600); err != nil {
		return "", err
	}
	if err := startChild(ctx, group, "jaeger", filepath.Join(work, "jaeger.log"), exec.CommandContext(ctx, bin, "--config", cfg)); err != nil {
		return "", err
	}
	url := "http://" + demoJaegerQuery
	if err := waitHTTP(ctx, url+"/api/services", 30*time.Second); err != nil {
		return "", fmt.Errorf("jaeger not answering: %w", err)
	}
	return url, nil
}

var demoHelpText = template.Must(template.New("help").Parse(`
Portcullis demo is up on loopback: the control plane, and a frontend and a backend application,
each with its agent (SPIFFE identity, SDS) and a real Envoy.

The frontend app (127.0.0.1:18080) calls the backend through its Envoy (outbound 127.0.0.1:19001),
mTLS to the backend's Envoy (127.0.0.1:15102), which applies the rate limit and asks the control
plane's ext_authz service before passing the request to the backend app (127.0.0.1:18090).

Try:
  allowed     curl -s 'http://127.0.0.1:18080/call?path=/api/items'
              200; the backend names its caller: spiffe://portcullis.local/ns/demo/sa/frontend
  denied      curl -si 'http://127.0.0.1:18080/call?path=/debug/vars'
              403 by policy backend-deny-debug; the x-portcullis-decision-id header leads to the
              decision in {{.Work}}/decisions.log (policy, rule, reason) and to its trace
  no token    curl -si 'http://127.0.0.1:18080/call?path=/admin/stats'
              401: /admin/* needs a JWT with the admin role
  JWT         curl -s -H 'Authorization: Bearer {{.Token}}' 'http://127.0.0.1:18080/call?path=/admin/stats'
              200 (an admin token from the demo issuer, valid for 24h)
  429         for i in $(seq 5); do curl -s -o /dev/null -w '%{http_code} ' 'http://127.0.0.1:18080/call?path=/api/slow'; done; echo
              200 200 429 ...: /api/slow takes 2 requests at once from each caller, then 1 a second
              (the rest of the backend: a bucket of 20, refilled 10 a second)
{{if .Redis}}  quota       for i in $(seq 4); do curl -s -o /dev/null -w '%{http_code} ' -H 'Authorization: Bearer {{.Token}}' 'http://127.0.0.1:18080/call?path=/admin/export'; done; echo
              200 200 200 429: /admin/export allows each user (the token's sub) 3 a minute across
              every backend proxy (a Global limit, buckets in Redis on 127.0.0.1:16379)
{{end}}  mTLS only   curl -sS http://127.0.0.1:15102/api/items
              "Empty reply from server": the backend's Envoy speaks only mTLS with a mesh
              certificate, and closes a connection that has none

Look:
  {{.CLI}} proxy status
      what each Envoy has ACKed (http://{{.Admin}}/debug/proxies)
  {{.CLI}} proxy config frontend-1
      the frontend Envoy's listeners, clusters, endpoints
  http://{{.Admin}}/debug/authz
      the live policies and JWT providers, with their health
  http://{{.Admin}}/metrics
      Prometheus metrics
  {{.Work}}/mesh
      the documents: edit one (try a typo) and watch http://{{.Admin}}/debug/mesh;
      valid changes apply within a second, a broken one changes nothing
  {{.Work}}/*.log
      control plane, agent and Envoy logs

{{if .Jaeger}}Traces (Jaeger, in memory): every request above is one trace — the frontend's outbound span,
the backend's inbound span, and the authorization Check with its JWT and policy spans:
  {{.Jaeger}}/search?service=backend
      Jaeger's UI: search, timelines, every span's tags
  http://{{.Admin}}/traces
      the requests: method, path, status, decision, code, policy, rule, reason
  http://{{.Admin}}/traces?decision=DENY
      why each denied request was denied
  http://{{.Admin}}/traces?decision_id=<x-portcullis-decision-id>
      the trace of one decision
{{else}}Traces: run with Jaeger (make jaeger; make demo does) to see each request as one trace.
{{end}}
Ctrl-C stops the demo and removes its files.
`))

func printDemoHelp(out io.Writer, h demoHelp) error { return demoHelpText.Execute(out, h) }

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
