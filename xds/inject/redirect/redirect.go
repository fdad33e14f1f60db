package redirect

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Defaults of the redirection, as the injector installs it (docs/kubernetes.md lists them).
const (
	InboundPort    = 15006 // inbound TCP is redirected here
	OutboundPort   = 15001 // and outbound TCP here
	AgentAdminPort = 15021 // the agent's admin port, never redirected: the kubelet probes it
	ProxyUID       = 1337  // Envoy and the agent run as this UID/GID; their traffic is not redirected
)

// Redirect describes the redirection the init container installs.
type Redirect struct {
	InboundPort, OutboundPort uint16
	// ProxyUID (and GID) own the proxy's sockets: their traffic leaves unredirected, which is
	// what keeps Envoy's own upstream connections from looping back into it.
	ProxyUID int
	// ExcludeInboundPorts are delivered to the application directly (the agent's admin port is
	// always excluded: the kubelet probes it).
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts and ExcludeOutboundCIDRs leave the pod directly.
	ExcludeOutboundPorts []uint16
	ExcludeOutboundCIDRs []netip.Prefix
}

// Chain names, prefixed so the rules are recognisable and removable.
const (
	chainInbound    = "PORTCULLIS_INBOUND"
	chainInRedirect = "PORTCULLIS_IN_REDIRECT"
	chainOutput     = "PORTCULLIS_OUTPUT"
	chainRedirect   = "PORTCULLIS_REDIRECT"
)

// Rules returns the iptables-restore input (nat table) for one address family: every inbound
// TCP connection to InboundPort, every outbound TCP connection to OutboundPort, except the
// proxy's own traffic, loopback destinations, and the exclusions; the proxy's connections to its
// own pod's address go to InboundPort. ipv6 selects ip6tables (loopback ::1, v6 CIDRs only).
func (r Redirect) Rules(ipv6 bool) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*nat")
	for _, c := range []string{chainInbound, chainInRedirect, chainOutput, chainRedirect} {
		w(":%s - [0:0]", c)
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", chainInRedirect, r.InboundPort)
	w("-A %s -p tcp -j REDIRECT --to-ports %d", chainRedirect, r.OutboundPort)

	// Inbound: everything but the excluded ports goes to the proxy's inbound listener.
	w("-A PREROUTING -p tcp -j %s", chainInbound)
	in := slices.Clone(r.ExcludeInboundPorts)
	if !slices.Contains(in, AgentAdminPort) {
		in = append(in, AgentAdminPort)
	}
	slices.Sort(in)
	for _, p := range in {
		w("-A %s -p tcp --dport %d -j RETURN", chainInbound, p)
	}
	w("-A %s -p tcp -j %s", chainInbound, chainInRedirect)

	// Outbound: the proxy's own connections (UID and GID), loopback, exclusions leave as they are.
	// Except one: the proxy connecting to its own pod's address (the pod called its own
	// service, whose endpoint is this pod) goes to the inbound listener, as a connection from
	// another pod would; without it the outbound proxy's mTLS would reach the application.
	// The application's own connections to the pod's address stay in the pod, as loopback does.
	loopback := "127.0.0.0/8"
	if ipv6 {
		loopback = "::1/128"
	}
	w("-A OUTPUT -p tcp -j %s", chainOutput)
	for _, owner := range []string{"--uid-owner", "--gid-owner"} {
		w("-A %s -o lo ! -d %s -m owner %s %d -j %s", chainOutput, loopback, owner, r.ProxyUID, chainInRedirect)
		w("-A %s -o lo -m owner ! %s %d -j RETURN", chainOutput, owner, r.ProxyUID)
		w("-A %s -m owner %s %d -j RETURN", chainOutput, owner, r.ProxyUID)
	}
	w("-A %s -d %s -j RETURN", chainOutput, loopback)
	out := slices.Clone(r.ExcludeOutboundPorts)
	slices.Sort(out)
	for _, p := range out {
		w("-A %s -p tcp --dport %d -j RETURN", chainOutput, p)
	}
	for _, c := range r.ExcludeOutboundCIDRs {
		if c.Addr().Is6() == ipv6 {
			w("-A %s -d %s -j RETURN", chainOutput, c.String())
		}
	}
	w("-A %s -j %s", chainOutput, chainRedirect)
	w("COMMIT")
	return b.String()
}

// Apply installs the rules with iptables-restore (and ip6tables-restore when ipv6), leaving
// other tables and chains alone (--noflush).
func (r Redirect) Apply(ctx context.Context, ipv6 bool) error {
	run := func(bin, rules string) error {
		cmd := exec.CommandContext(ctx, bin, "--noflush")
		cmd.Stdin = strings.NewReader(rules)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("inject: %s: %w: %s", bin, err, strings.TrimSpace(out.String()))
		}
		return nil
	}
	if err := run("iptables-restore", r.Rules(false)); err != nil {
		return err
	}
	if ipv6 {
		return run("ip6tables-restore", r.Rules(true))
	}
	return nil
}

// Args are the init container's command-line flags for r (portcullis init-iptables ...).
func (r Redirect) Args() []string {
	args := []string{
		"--inbound-port", strconv.Itoa(int(r.InboundPort)),
		"--outbound-port", strconv.Itoa(int(r.OutboundPort)),
		"--proxy-uid", strconv.Itoa(r.ProxyUID),
	}
	if len(r.ExcludeInboundPorts) > 0 {
		args = append(args, "--exclude-inbound-ports", joinPorts(r.ExcludeInboundPorts))
	}
	if len(r.ExcludeOutboundPorts) > 0 {
		args = append(args, "--exclude-outbound-ports", joinPorts(r.ExcludeOutboundPorts))
	}
	if len(r.ExcludeOutboundCIDRs) > 0 {
		cidrs := make([]string, len(r.ExcludeOutboundCIDRs))
		for i, c := range r.ExcludeOutboundCIDRs {
			cidrs[i] = c.String()
		}
		args = append(args, "--exclude-outbound-cidrs", strings.Join(cidrs, ","))
	}
	return args
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// Parse builds a Redirect from the init container's flag values.
func Parse(inbound, outbound uint16, uid int, excludeIn, excludeOut, excludeCIDRs string) (Redirect, error) {
	r := Redirect{InboundPort: inbound, OutboundPort: outbound, ProxyUID: uid}
	var err error
	if r.ExcludeInboundPorts, err = ParsePorts(excludeIn); err != nil {
		return r, fmt.Errorf("inject: --exclude-inbound-ports: %w", err)
	}
	if r.ExcludeOutboundPorts, err = ParsePorts(excludeOut); err != nil {
		return r, fmt.Errorf("inject: --exclude-outbound-ports: %w", err)
	}
	if r.ExcludeOutboundCIDRs, err = ParseCIDRs(excludeCIDRs); err != nil {
		return r, fmt.Errorf("inject: --exclude-outbound-cidrs: %w", err)
	}
	if inbound == 0 || outbound == 0 || inbound == outbound {
		return r, fmt.Errorf("inject: inbound and outbound ports must be set and differ")
	}
	return r, nil
}

// PodHasGlobalIPv6 reports whether the network namespace this process runs in has a global IPv6
// address: a dual-stack pod then gets the IPv6 rules too, so its IPv6 TCP is refused (Envoy
// listens on IPv4) instead of bypassing the proxy.
func PodHasGlobalIPv6() bool {
	data, err := os.ReadFile("/proc/net/if_inet6")
	return err == nil && HasGlobalIPv6(string(data))
}

// HasGlobalIPv6 reports whether ifInet6 (the content of /proc/net/if_inet6) lists a global
// IPv6 address on an interface other than loopback. Such a pod is dual-stack: its IPv6 TCP
// must be redirected too, or it would bypass the proxy.
func HasGlobalIPv6(ifInet6 string) bool {
	for _, line := range strings.Split(ifInet6, "\n") {
		// address, interface index, prefix length, scope, flags, interface name
		f := strings.Fields(line)
		if len(f) == 6 && f[3] == "00" && f[5] != "lo" {
			return true
		}
	}
	return false
}

// ParsePorts reads a comma-separated port list (a flag or a pod annotation).
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port", f)
		}
		if !slices.Contains(out, uint16(n)) {
			out = append(out, uint16(n))
		}
	}
	return out, nil
}

// ParseCIDRs reads a comma-separated CIDR list (a flag or a pod annotation).
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
