package cli

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/xds/snapshot"
)

func TestResolveNode(t *testing.T) {
	status := []snapshot.ProxyStatus{{Node: "frontend-1.demo"}, {Node: "backend-1.demo"}, {Node: "backend-1.shop"}}
	for _, tc := range []struct{ in, want, err string }{
		{in: "frontend-1.demo", want: "frontend-1.demo"},
		{in: "frontend-1", want: "frontend-1.demo"},
		{in: "backend-1", err: `"backend-1" names 2 proxies: backend-1.demo, backend-1.shop; give the full node ID`},
		{in: "payments-1", err: `no proxy "payments-1"; known nodes: backend-1.demo, backend-1.shop, frontend-1.demo`},
	} {
		got, err := resolveNode(tc.in, status)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := resolveNode("x", nil); err == nil || !strings.Contains(err.Error(), "no proxy has registered") {
		t.Errorf("no proxies: %v", err)
	}
}
