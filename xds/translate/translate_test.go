package translate

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/pmezard/go-difflib/difflib"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out")

var testOptions = Options{
	AuthzAddress: "127.0.0.1:15011",
	AuthzID:      spiffeid.RequireFromString("spiffe://placeholder/ns/portcullis-system/sa/controlplane"),
	JWKS:         jwt.EnvoyJWKS,
}

type goldenCase struct {
	Proxy string `json:"proxy"`
	// Registered is the workload as its agent registers it (node metadata) when no Workload
	// document describes the proxy.
	Registered *model.WorkloadDoc          `json:"registered"`
	Endpoints  map[string][]model.Endpoint `json:"endpoints"`
}

// loadCase reads testdata/in/<name>: the mesh documents and the proxy to translate. An input the
// pipeline refuses before translation (a mesh problem, a registration that does not fit the mesh)
// returns that error.
func loadCase(t testing.TB, dir string) (Input, error) {
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
		return Input{}, err
	}
	mesh, _ := src.Current()
	w := c.Registered
	if w == nil {
		if w = mesh.Workload(c.Proxy); w == nil {
			t.Fatalf("%s: no workload %q", dir, c.Proxy)
		}
	}
	proxy, err := model.NewProxy(model.NewMeshContext(mesh), w)
	if err != nil {
		return Input{}, err
	}
	in := Input{Proxy: proxy, Endpoints: map[model.Ref][]model.Endpoint{}}
	for key, eps := range c.Endpoints {
		ns, name, _ := strings.Cut(key, "/")
		in.Endpoints[model.Ref{Namespace: ns, Name: name}] = eps
	}
	if w.Transparent() {
		in.Inbound = proxy.TransparentInbound(in.Endpoints)
	}
	return in, nil
}

// mustLoad loads a case that must translate.
func mustLoad(t testing.TB, dir string) Input {
	t.Helper()
	in, err := loadCase(t, dir)
	if err != nil {
		t.Fatal(err)
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
	var out []proto.Message
	for _, list := range [][]proto.Message{asMessages(r.Listeners), asMessages(r.Routes), asMessages(r.Clusters), asMessages(r.Endpoints), asMessages(r.Extensions)} {
		out = append(out, list...)
	}
	return out
}

func asMessages[T proto.Message](list []T) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

// errorFile is the golden output of an input the pipeline refuses: the error, as the control
// plane logs it and records in the proxy's ledger entry.
const errorFile = "error.txt"

// goldenFiles renders a case's outcome: one file per resource type and the documents behind
// each resource, or the error.
func goldenFiles(t testing.TB, dir string) map[string][]byte {
	in, err := loadCase(t, dir)
	var res *Resources
	if err == nil {
		res, err = Translate(in, testOptions)
	}
	if err != nil {
		return map[string][]byte{errorFile: []byte(err.Error() + "\n")}
	}
	files := map[string][]byte{
		"listeners.yaml":  toYAML(t, res.Listeners),
		"routes.yaml":     toYAML(t, res.Routes),
		"clusters.yaml":   toYAML(t, res.Clusters),
		"endpoints.yaml":  toYAML(t, res.Endpoints),
		"extensions.yaml": toYAML(t, res.Extensions),
		"sources.yaml":    sourcesYAML(t, res.Sources),
	}
	if res.Authz != nil {
		out, err := yaml.Marshal(res.Authz)
		if err != nil {
			t.Fatal(err)
		}
		files["authz.yaml"] = out
	}
	return files
}

// sourcesYAML renders Resources.Sources, resource names in order.
func sourcesYAML(t testing.TB, sources map[string][]string) []byte {
	t.Helper()
	out, err := yaml.Marshal(sources)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGolden translates every case in testdata/in and compares with testdata/out: one file per
// resource type, or error.txt for an input that must be refused. A mismatch prints a unified
// diff. Run with -update to rewrite them (orphaned outputs are removed).
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
			files := goldenFiles(t, dir)
			out := filepath.Join("testdata/out", name)
			if *update {
				if err := os.MkdirAll(out, 0o755); err != nil {
					t.Fatal(err)
				}
				for file, got := range files {
					if err := os.WriteFile(filepath.Join(out, file), got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return
			}
			have, err := os.ReadDir(out)
			if err != nil {
				t.Fatalf("%v (run go test ./xds/translate -run TestGolden -update)", err)
			}
			for _, e := range have {
				if _, ok := files[e.Name()]; !ok {
					t.Errorf("%s: the case no longer produces %s (refused, or now translated?)", out, e.Name())
				}
			}
			for file, got := range files {
				path := filepath.Join(out, file)
				want, err := os.ReadFile(path)
				if err != nil {
					t.Errorf("%v (the case now produces it; review with -update and git diff)", err)
					continue
				}
				if diff := unifiedDiff(path, want, got); diff != "" {
					t.Errorf("%s differs from the golden file; -update rewrites it:\n%s", path, diff)
				}
			}
			if _, refused := files[errorFile]; refused {
				return
			}
			// Deterministic to the byte, nested Anys included: equal input, equal versions.
			first, err := Translate(mustLoad(t, dir), testOptions)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Translate(mustLoad(t, dir), testOptions)
			if err != nil {
				t.Fatal(err)
			}
			a, b := allMessages(first), allMessages(again)
			for i := range a {
				x, errA := proto.MarshalOptions{Deterministic: true}.Marshal(a[i])
				y, errB := proto.MarshalOptions{Deterministic: true}.Marshal(b[i])
				if errA != nil || errB != nil || !bytes.Equal(x, y) {
					t.Errorf("resource %d: translation is not deterministic (%v, %v)", i, errA, errB)
				}
			}
		})
	}
}

// unifiedDiff is the difference between a golden file and the output, or "" when they are equal.
func unifiedDiff(path string, want, got []byte) string {
	if bytes.Equal(want, got) {
		return ""
	}
	diff, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(want)), B: difflib.SplitLines(string(got)),
		FromFile: path + " (golden)", ToFile: path + " (translated)", Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("(no diff: %v)", err)
	}
	return diff
}

// TestEnvoyAcceptsGolden loads every golden case's resources into a real Envoy in validation
// mode, with the agent's bootstrap around them: what passes ValidateAll must also be config Envoy
// accepts (extensions present, fields consistent). Validation mode fetches nothing, so each case
// is loaded twice: as translated (listeners naming their routes and ext_authz configuration on
// ADS), and with those routes and filter configurations put in place of the names, which is how
// Envoy checks each route's per-filter settings against the filters of its listener.
func TestEnvoyAcceptsGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Envoy")
	}
	bin := envoytest.Require(t)
	cases, _ := filepath.Glob("testdata/in/*")
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in, err := loadCase(t, dir)
			if err != nil {
				t.Skipf("refused input: %v", err)
			}
			res, err := Translate(in, testOptions)
			if err != nil {
				t.Fatal(err)
			}
			inlined, err := inlineDiscovered(res)
			if err != nil {
				t.Fatal(err)
			}
			for name, listeners := range map[string][]*listenerv3.Listener{"as translated": res.Listeners, "routes and filters in place": inlined} {
				b := validationBootstrap(t, in.Proxy)
				b.StaticResources.Listeners = listeners
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
					t.Fatalf("envoy rejects the translation (%s): %v\n%s", name, err, out)
				}
			}
		})
	}
}

// inlineDiscovered returns copies of the listeners whose connection managers carry their route
// configuration and their ECDS filter configurations inline. A name the resources do not define
// is an error: what a listener refers to must be translated with it.
func inlineDiscovered(res *Resources) ([]*listenerv3.Listener, error) {
	routes := map[string]*routev3.RouteConfiguration{}
	for _, r := range res.Routes {
		routes[r.GetName()] = r
	}
	exts := map[string]*corev3.TypedExtensionConfig{}
	for _, e := range res.Extensions {
		exts[e.GetName()] = e
	}
	var out []*listenerv3.Listener
	for _, l := range res.Listeners {
		l = proto.Clone(l).(*listenerv3.Listener)
		for _, chain := range append(l.GetFilterChains(), l.GetDefaultFilterChain()) {
			for _, f := range chain.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().MessageIs(&hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
						return nil, err
					}
				} else {
					continue
				}
				if name := hcm.GetRds().GetRouteConfigName(); name != "" {
					rc, ok := routes[name]
					if !ok {
						return nil, fmt.Errorf("listener %s: no route configuration %q", l.GetName(), name)
					}
					hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetConfigDiscovery() == nil {
						continue
					}
					e, ok := exts[hf.GetName()]
					if !ok {
						return nil, fmt.Errorf("listener %s: no ECDS resource %q", l.GetName(), hf.GetName())
					}
					hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: e.GetTypedConfig()}
				}
				a, err := Any(&hcm)
				if err != nil {
					return nil, err
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}
		}
		out = append(out, l)
	}
	return out, nil
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
		cluster = p.Service.Ref.Name
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(fmt.Sprintf(tmpl, p.NodeID, cluster)), &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

func TestTranslateErrors(t *testing.T) {
	in := mustLoad(t, "testdata/in/strict-tracing")
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
	res, err := Translate(Input{}, testOptions)
	if want := "translate: incomplete proxy"; err == nil || res != nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("empty input: got resources %v, err %v; want nothing and an error starting %q", res != nil, err, want)
	}
}
