//go:build !agentonly

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"

	"github.com/portcullis/portcullis/cmd/internal/controlplane"
	"github.com/portcullis/portcullis/xds/snapshot"
)

func newProxyCommand(g *globals) *cobra.Command {
	var adminAddr string
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Inspect the proxies connected to the control plane",
	}
	cmd.PersistentFlags().StringVar(&adminAddr, "admin-addr", controlplane.DefaultAdminAddr, "control plane admin address")
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "What each proxy has ACKed or NACKed",
		Long: `Show every registered proxy: whether it is connected, whether it has ACKed everything
published for it, and for each resource type the version it has; a NACK shows the version Envoy
refused and its reason (the proxy keeps its previous configuration until a fixed one is published).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := adminGet(adminAddr, "/debug/proxies")
			if err != nil {
				return err
			}
			var status []snapshot.ProxyStatus
			if err := json.Unmarshal(body, &status); err != nil {
				return fmt.Errorf("reading /debug/proxies: %w", err)
			}
			return printProxyStatus(cmd.OutOrStdout(), status)
		},
	}, &cobra.Command{
		Use:   "config NODE",
		Short: "Print a proxy's current resources as YAML",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := adminGet(adminAddr, "/debug/proxies/config?node="+url.QueryEscape(args[0]))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(body)
			return err
		},
	})
	return cmd
}

func adminGet(addr, path string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return nil, fmt.Errorf("control plane admin at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("control plane admin at %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control plane admin %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

var statusTypes = []struct{ name, url string }{
	{"CDS", resource.ClusterType}, {"EDS", resource.EndpointType}, {"LDS", resource.ListenerType},
}

func printProxyStatus(w io.Writer, status []snapshot.ProxyStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tIDENTITY\tCONNECTED\tSYNCED\tCDS\tEDS\tLDS")
	var problems []string
	for _, p := range status {
		cols := []string{p.Node, p.Identity, yesNo(p.Connected), yesNo(p.Synced() && p.Error == "")}
		for _, t := range statusTypes {
			ts := p.Types[t.url]
			switch {
			case ts == nil:
				cols = append(cols, "-")
			case ts.Nacked != "":
				cols = append(cols, "NACK "+ts.Nacked)
				msg := fmt.Sprintf("%s %s: refused version %s: %s", p.Node, t.name, ts.Nacked, ts.NackError)
				if len(ts.NackDocuments) > 0 {
					msg += " (from " + strings.Join(ts.NackDocuments, ", ") + ")"
				}
				problems = append(problems, msg)
			default:
				cols = append(cols, orDash(ts.Acked))
			}
		}
		if p.Error != "" {
			problems = append(problems, fmt.Sprintf("%s: not configured: %s", p.Node, p.Error))
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(w, p)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
