package redirect_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/xds/inject/redirect"
)

func TestRules(t *testing.T) {
	r := redirect.Redirect{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337,
		ExcludeInboundPorts: []uint16{9000}, ExcludeOutboundPorts: []uint16{5432},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::/8")}}
	cases := []struct {
		name       string
		ipv6       bool
		want, dont []string
	}{
		{"ipv4", false, []string{
			"-A PORTCULLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
			"-A PORTCULLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
			"-A PORTCULLIS_INBOUND -p tcp --dport 9000 -j RETURN",
			"-A PORTCULLIS_INBOUND -p tcp --dport 15021 -j RETURN",
			"-A PORTCULLIS_OUTPUT -o lo ! -d 127.0.0.0/8 -m owner --uid-owner 1337 -j PORTCULLIS_IN_REDIRECT",
			"-A PORTCULLIS_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
			"-A PORTCULLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN",
			"-A PORTCULLIS_OUTPUT -o lo ! -d 127.0.0.0/8 -m owner --gid-owner 1337 -j PORTCULLIS_IN_REDIRECT",
			"-A PORTCULLIS_OUTPUT -m owner --gid-owner 1337 -j RETURN",
			"-A PORTCULLIS_OUTPUT -d 127.0.0.0/8 -j RETURN",
			"-A PORTCULLIS_OUTPUT -p tcp --dport 5432 -j RETURN",
			"-A PORTCULLIS_OUTPUT -d 10.0.0.1/32 -j RETURN",
			"-A PORTCULLIS_OUTPUT -j PORTCULLIS_REDIRECT",
		}, []string{"fd00::/8"}},
		{"ipv6", true, []string{
			"-A PORTCULLIS_OUTPUT -o lo ! -d ::1/128 -m owner --uid-owner 1337 -j PORTCULLIS_IN_REDIRECT",
			"-A PORTCULLIS_OUTPUT -d ::1/128 -j RETURN", "-A PORTCULLIS_OUTPUT -d fd00::/8 -j RETURN",
		}, []string{"10.0.0.1/32", "127.0.0.0/8"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := r.Rules(c.ipv6)
			for _, w := range c.want {
				if !strings.Contains(got, w+"\n") {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			for _, d := range c.dont {
				if strings.Contains(got, d) {
					t.Errorf("unexpected %q in\n%s", d, got)
				}
			}
			// The owner exclusions must come before the redirect, or Envoy would loop; the proxy's
			// connections to its own pod must go inbound before they are excluded, or a pod
			// calling its own service would send mTLS to the application.
			if strings.Index(got, "--uid-owner 1337 -j RETURN") > strings.Index(got, "-j PORTCULLIS_REDIRECT\n") {
				t.Error("proxy UID exclusion after the redirect")
			}
			if strings.Index(got, "-o lo ! -d") > strings.Index(got, "--uid-owner 1337 -j RETURN") {
				t.Error("the proxy's connections to its own pod are excluded before they are sent inbound")
			}
		})
	}
	back, err := redirect.Parse(15006, 15001, 1337, "9000", "5432", "10.0.0.1/32,fd00::/8")
	if err != nil || back.Rules(false) != r.Rules(false) || back.Rules(true) != r.Rules(true) {
		t.Fatalf("flags do not round-trip: %v", err)
	}
}

func TestHasGlobalIPv6(t *testing.T) {
	const loopback = "00000000000000000000000000000001 01 80 10 80       lo\n"
	const linkLocal = "fe800000000000000c2dfffffe0b1c2a 02 40 20 80     eth0\n"
	const global = "fd000000000000000000000000000005 02 40 00 80     eth0\n"
	for in, want := range map[string]bool{
		"": false, loopback: false, loopback + linkLocal: false,
		loopback + linkLocal + global: true,
		// a global address on lo does not make the pod dual-stack
		"fd000000000000000000000000000005 01 80 00 80       lo\n": false,
	} {
		if got := redirect.HasGlobalIPv6(in); got != want {
			t.Errorf("HasGlobalIPv6(%q) = %v", in, got)
		}
	}
}

// FuzzParse: the init container's flags come from pod annotations; whatever they
// say is either refused with an error or yields rules that parse back to the same rules.
func FuzzParse(f *testing.F) {
	f.Add("9000", "5432", "10.0.0.1/32,fd00::/8")
	f.Add("", "", "")
	f.Add("0,65536", "-1", "10.0.0.1")
	f.Add("15006", "a,b", "::/0,0.0.0.0/0")
	f.Fuzz(func(t *testing.T, in, out, cidrs string) {
		r, err := redirect.Parse(15006, 15001, 1337, in, out, cidrs)
		if err != nil {
			return
		}
		args := r.Args()
		back := map[string]string{}
		for i := 0; i+1 < len(args); i += 2 {
			back[args[i]] = args[i+1]
		}
		again, err := redirect.Parse(15006, 15001, 1337, back["--exclude-inbound-ports"], back["--exclude-outbound-ports"], back["--exclude-outbound-cidrs"])
		if err != nil || again.Rules(false) != r.Rules(false) || again.Rules(true) != r.Rules(true) {
			t.Fatalf("flags %q %q %q do not round-trip through Args %v: %v", in, out, cidrs, args, err)
		}
	})
}
