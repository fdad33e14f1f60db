package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/xds/inject/redirect"
)

func newInitIPTablesCommand(g *globals) *cobra.Command {
	var (
		inbound, outbound    uint16
		uid                  int
		exIn, exOut, exCIDRs string
		ipv6, dryRun         bool
	)
	cmd := &cobra.Command{
		Use:   "init-iptables",
		Short: "Install the transparent-proxy redirection in the pod's network namespace (the injected init container)",
		Long: `Install the nat rules that send the pod's TCP through its proxy: inbound connections to
--inbound-port, outbound connections to --outbound-port, except the proxy's own traffic
(--proxy-uid, as UID and GID), loopback, the agent's admin port and the excluded ports and CIDRs.
The proxy's own connections to the pod's address (the pod calling its own service) go to
--inbound-port, as any caller's do.
Needs NET_ADMIN and NET_RAW (the injector grants them to this init container only) and
iptables-restore. --dry-run prints the rules instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := redirect.Parse(inbound, outbound, uid, exIn, exOut, exCIDRs)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("ipv6") {
				ipv6 = redirect.PodHasGlobalIPv6()
			}
			if dryRun {
				out := r.Rules(false)
				if ipv6 {
					out += r.Rules(true)
				}
				_, err := fmt.Fprint(cmd.OutOrStdout(), out)
				return err
			}
			if err := r.Apply(cmd.Context(), ipv6); err != nil {
				return err
			}
			g.log.Info("redirection installed", "inbound_port", inbound, "outbound_port", outbound, "proxy_uid", uid, "ipv6", ipv6)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.Uint16Var(&inbound, "inbound-port", redirect.InboundPort, "the proxy's inbound port")
	fl.Uint16Var(&outbound, "outbound-port", redirect.OutboundPort, "the proxy's outbound port")
	fl.IntVar(&uid, "proxy-uid", redirect.ProxyUID, "UID and GID of the proxy (Envoy and the agent), whose traffic is not redirected")
	fl.StringVar(&exIn, "exclude-inbound-ports", "", "comma-separated inbound ports delivered to the application directly")
	fl.StringVar(&exOut, "exclude-outbound-ports", "", "comma-separated destination ports left alone")
	fl.StringVar(&exCIDRs, "exclude-outbound-cidrs", "", "comma-separated destination CIDRs left alone")
	fl.BoolVar(&ipv6, "ipv6", false, "also install the IPv6 rules (ip6tables-restore); default: when the pod has a global IPv6 address")
	fl.BoolVar(&dryRun, "dry-run", false, "print the rules, change nothing")
	return cmd
}
