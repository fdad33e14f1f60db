package translate

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out")

var testOptions = Options{
	AuthzAddress: "127.0.0.1:15011",
	AuthzID:      spiffeid.RequireFromString("spiffe://placeholder/ns/portcullis-system/sa/controlplane"),
}

type goldenCase struct {
	Proxy     string                      `json:"proxy"`
	Endpoints map[string][]model.Endpoint `json:"endpoints"`
}

// loadCase reads testdata/in/<name>: the mesh documents and the proxy to translate.
func loadCase(t testing.TB, dir string) Input {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "case.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c goldenCase
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf("%s/case.yaml: %v", dir, err)
	}
	src, err := source.NewDir(filepath.Join(dir, "mesh"), source.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	mesh, _ := src.Current()
	w := mesh.Workload(c.Proxy)
	if w == nil {
		t.Fatalf("%s: no workload %q", dir, c.Proxy)
	}
	proxy, err := model.NewProxy(mesh, w)
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Proxy: proxy, Endpoints: map[model.Ref][]model.Endpoint{}}
	for key, eps := range c.Endpoints {
		ns, name, _ := strings.Cut(key, "/")
		in.Endpoints[model.Ref{Namespace: ns, Name: name}] = eps
	}
	if w.Transparent() {
		in.Inbound = TransparentInbound(proxy, in.Endpoints)
	}
	return in
}

// toYAML renders messages for golden files.
func toYAML[T proto.Message](t testing.TB, msgs []T) []byte {
	t.Helper()
	out, err := YAML(msgs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func allMessages(r *Resources) []proto.Message {
	return append(append(asMessages(r.Listeners), asMessages(r.Clusters)...), asMessages(r.Endpoints)...)
}

func asMessages[T proto.Message](list []T) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

// TestGolden translates every case in testdata/in and compares with testdata/out, one file per
// resource type. Run with -update to rewrite them (orphaned outputs are removed).
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/in/*")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	if *update {
		if err := os.RemoveAll("testdata/out"); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range cases {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			res, err := Translate(loadCase(t, dir), testOptions)
			if err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{
				"listeners.yaml": toYAML(t, res.Listeners),
				"clusters.yaml":  toYAML(t, res.Clusters),
				"endpoints.yaml": toYAML(t, res.Endpoints),
			}
			for file, got := range files {
				path := filepath.Join("testdata/out", name, file)
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./xds/translate -run TestGolden -update)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from the golden file; review with -update and git diff", path)
				}
			}
			// Deterministic to the byte, nested Anys included: equal input, equal versions.
			again, err := Translate(loadCase(t, dir), testOptions)
			if err != nil {
				t.Fatal(err)
			}
			first, second := allMessages(res), allMessages(again)
			for i := range first {
				a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(first[i])
				b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(second[i])
				if !bytes.Equal(a, b) {
					t.Errorf("resource %d: translation is not deterministic", i)
				}
			}
		})
	}
}

// TestEnvoyAcceptsGolden loads every golden case's resources into a real Envoy in validation
// mode, with the agent's bootstrap around them: what passes ValidateAll must also be config Envoy
// accepts (extensions present, fields consistent).
func TestEnvoyAcceptsGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Envoy")
	}
	bin := envoytest.Require(t)
	cases, _ := filepath.Glob("testdata/in/*")
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in := loadCase(t, dir)
			res, err := Translate(in, testOptions)
			if err != nil {
				t.Fatal(err)
			}
			b := validationBootstrap(t, in.Proxy)
			b.StaticResources.Listeners = res.Listeners
			b.StaticResources.Clusters = append(b.StaticResources.Clusters, res.Clusters...)
			raw, err := protojson.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(t.TempDir(), "envoy.json")
			if err := os.WriteFile(cfg, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--mode", "validate", "-c", cfg, "--log-level", "warn").CombinedOutput()
			if err != nil {
				t.Fatalf("envoy rejects the translation: %v\n%s", err, out)
			}
		})
	}
}

// validationBootstrap is a minimal bootstrap with the static SDS and xDS clusters the
// translation refers to.
func validationBootstrap(t *testing.T, p *model.Proxy) *bootstrapv3.Bootstrap {
	t.Helper()
	const tmpl = `{
	  "node": {"id": %q, "cluster": %q},
	  "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
	  "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
	     "grpc_services": [{"envoy_grpc": {"cluster_name": "portcullis-xds"}}]}},
	  "static_resources": {"clusters": [
	    {"name": "portcullis-sds", "type": "STATIC", "load_assignment": {"cluster_name": "portcullis-sds",
	       "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/tmp/sds.sock"}}}}]}]},
	     "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
	       "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	       "explicit_http_config": {"http2_protocol_options": {}}}}},
	    {"name": "portcullis-xds", "type": "STATIC", "load_assignment": {"cluster_name": "portcullis-xds",
	       "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]},
	     "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
	       "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	       "explicit_http_config": {"http2_protocol_options": {}}}}}
	  ]}
	}`
	cluster := p.Workload.Spec.ServiceAccount
	if p.Service != nil {
		cluster = p.Service.Metadata.Name
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(fmt.Sprintf(tmpl, p.NodeID, cluster)), &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

func TestTranslateErrors(t *testing.T) {
	in := loadCase(t, "testdata/in/strict-tracing")
	for name, opts := range map[string]Options{
		"no authz address":  {AuthzID: testOptions.AuthzID},
		"bad authz address": {AuthzAddress: "nowhere", AuthzID: testOptions.AuthzID},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := Translate(in, opts)
			if err == nil || res != nil {
				t.Fatalf("got resources %v, err %v; want an error and nothing", res != nil, err)
			}
			if !strings.HasPrefix(err.Error(), "translate: ") {
				t.Errorf("error without package prefix: %v", err)
			}
		})
	}
	if _, err := Translate(Input{}, testOptions); err == nil || !errors.Is(err, err) {
		t.Error("empty input accepted")
	}
}
