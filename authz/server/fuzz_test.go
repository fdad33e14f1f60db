package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/portcullis/portcullis/authz/policy"
)

// FuzzAttributes reads arbitrary methods, paths and header lines, as Envoy's header_map carries
// them, into attributes. It must never panic; what it accepts must be canonical (a method without
// lower case, a normalised path); and every header line must reach the attributes as a value of
// its own, in order, never joined with another.
func FuzzAttributes(f *testing.F) {
	for _, s := range []struct{ method, path, lines string }{
		{"GET", "/api/items", "x-debug: 1\nx-debug: 1"},
		{"delete", "/api/x", "x-debug: 0\nX-Debug: 1"},
		{"GET", "/api/..;/admin", "a: b"},
		{"PATCH", "/%c0%ae%c0%ae/x", "x_debug: 1\nx-debug: 1,1"},
		{"GET /", "//a/./b/../c?q=1", ": \n:x\ncookie: a=1\ncookie: a=2"},
	} {
		f.Add(s.method, s.path, s.lines)
	}
	f.Fuzz(func(t *testing.T, method, path, lines string) {
		hm := &corev3.HeaderMap{}
		want := map[string][]string{}
		for _, l := range strings.Split(lines, "\n") {
			k, v, _ := strings.Cut(l, ":")
			v = strings.TrimPrefix(v, " ")
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
			want[lowerASCII(k)] = append(want[lowerASCII(k)], v)
		}
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, HeaderMap: hm}},
		}}
		a, err := Attributes(req, time.Unix(0, 0))
		if err != nil {
			return
		}
		if policy.CheckMethod(a.Request.Method) != nil || a.Request.Method != method {
			t.Fatalf("method %q accepted as %q", method, a.Request.Method)
		}
		if again, _, err := policy.NormalizePath(a.Request.Path); a.Request.Path != "*" && (err != nil || again != a.Request.Path) && !strings.Contains(a.Request.Path, "%") {
			t.Fatalf("path %q read as %q, which is not normalised", path, a.Request.Path)
		}
		for k, vals := range want {
			if !slices.Equal(a.Request.Headers[k], vals) {
				t.Fatalf("header %q: %q, want %q", k, a.Request.Headers[k], vals)
			}
		}
		if len(a.Request.Headers) != len(want) {
			t.Fatalf("%d headers, want %d", len(a.Request.Headers), len(want))
		}
	})
}
