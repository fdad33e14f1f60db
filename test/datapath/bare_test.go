package datapath

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"text/template"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/testca"
)

// envoyWorkers is the worker threads of every Envoy measured: the agent's default
// (--envoy-concurrency), as Istio's sidecars run in the benchmark this one is compared with.
const envoyWorkers = 2

// bareFiles is what the bare pair's templates (testdata/bare-*.yaml), and the backend template
// of BenchmarkInboundFeatures (testdata/features-backend.yaml), are filled with.
type bareFiles struct {
	Listen, Upstream    int
	Cert, Key, CA, Peer string
	Features            features // features-backend.yaml's switches
}

// bare is the reference the mesh is compared with: two Envoys with the hand-written minimal
// configuration of testdata/ — mTLS between them with SPIFFE IDs checked, nothing else — in
// front of the same application, with as many worker threads as the mesh's proxies.
type bare struct {
	url   string
	procs []proc
}

// startBare starts the bare pair in front of the application on appPort; stop is called when
// the iteration ends.
func startBare(b *testing.B, appPort int, stop func(func())) *bare {
	b.Helper()
	return startPair(b, appPort, stop, "bare-backend.yaml", features{})
}

// startPair starts the bare frontend Envoy in front of a backend Envoy whose configuration is the
// template testdata/backendTemplate filled with f.
func startPair(b testing.TB, appPort int, stop func(func()), backendTemplate string, f features) *bare {
	b.Helper()
	ca := testca.New(b, trustDomain)
	dir := b.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.CertPEM)
	frontendID, backendID := "spiffe://"+trustDomain+"/ns/"+namespace+"/sa/frontend", "spiffe://"+trustDomain+"/ns/"+namespace+"/sa/backend"
	start := func(name, file string, f bareFiles, self string) *envoytest.Envoy {
		svid := ca.SVID(b, self)
		f.Cert, f.Key, f.CA = write(name+".pem", svid.CertPEM), write(name+"-key.pem", svid.KeyPEM), caFile
		tmpl, err := template.ParseFiles(filepath.Join("testdata", file))
		if err != nil {
			b.Fatal(err)
		}
		var cfg bytes.Buffer
		if err := tmpl.Execute(&cfg, f); err != nil {
			b.Fatal(err)
		}
		e := envoytest.Start(b, cfg.String(), envoytest.Options{LogLevel: "warn", Concurrency: envoyWorkers})
		stop(e.Stop)
		return e
	}
	inbound, outbound := proctest.FreePort(b), proctest.FreePort(b)
	backend := start("backend", backendTemplate, bareFiles{Listen: inbound, Upstream: appPort, Peer: frontendID, Features: f}, backendID)
	frontend := start("frontend", "bare-frontend.yaml", bareFiles{Listen: outbound, Upstream: inbound, Peer: backendID}, frontendID)
	p := &bare{
		url:   "http://127.0.0.1:" + strconv.Itoa(outbound) + path,
		procs: []proc{{"frontend-envoy", frontend.Pid()}, {"backend-envoy", backend.Pid()}},
	}
	proctest.Eventually(b, 10*time.Second, func() error {
		code, body, err := meshtest.Do(http.MethodGet, p.url, nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("GET %s: %d %q", p.url, code, body)
		}
		return err
	}, "a request through the bare pair")
	return p
}
