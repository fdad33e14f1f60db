package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/portcullis/portcullis/xds/snapshot"
)

// ProxyStatus prints every registered proxy from the control plane's admin port at adminAddr:
// connected or not, synced or not, the version of each resource type it ACKed, and below the
// table each NACK with its reason and the documents behind the refused resource.
func ProxyStatus(out io.Writer, adminAddr string) error {
	body, err := adminGet(adminAddr, "/debug/proxies")
	if err != nil {
		return err
	}
	var status []snapshot.ProxyStatus
	if err := json.Unmarshal(body, &status); err != nil {
		return fmt.Errorf("cli: reading /debug/proxies: %w", err)
	}
	return printProxyStatus(out, status)
}

// ProxyConfig prints a proxy's current resources as YAML. The node is its full ID
// (frontend-1.demo) or, when one registered proxy has it, its name without the namespace
// (frontend-1); an unknown node is an error listing the known ones.
func ProxyConfig(out io.Writer, adminAddr, node string) error {
	body, err := adminGet(adminAddr, "/debug/proxies")
	if err != nil {
		return err
	}
	var status []snapshot.ProxyStatus
	if err := json.Unmarshal(body, &status); err != nil {
		return fmt.Errorf("cli: reading /debug/proxies: %w", err)
	}
	if node, err = resolveNode(node, status); err != nil {
		return err
	}
	if body, err = adminGet(adminAddr, "/debug/proxies/config?node="+url.QueryEscape(node)); err != nil {
		return err
	}
	_, err = out.Write(body)
	return err
}

// resolveNode finds a node by its ID or by its short name (the ID up to the first dot).
func resolveNode(node string, status []snapshot.ProxyStatus) (string, error) {
	var known, matches []string
	for _, p := range status {
		if p.Node == node {
			return node, nil
		}
		known = append(known, p.Node)
		if short, _, _ := strings.Cut(p.Node, "."); short == node {
			matches = append(matches, p.Node)
		}
	}
	switch {
	case len(matches) == 1:
		return matches[0], nil
	case len(matches) > 1:
		return "", fmt.Errorf("cli: %q names %d proxies: %s; give the full node ID", node, len(matches), strings.Join(matches, ", "))
	case len(known) == 0:
		return "", fmt.Errorf("cli: no proxy %q: no proxy has registered with the control plane", node)
	}
	slices.Sort(known)
	return "", fmt.Errorf("cli: no proxy %q; known nodes: %s", node, strings.Join(known, ", "))
}

func adminGet(addr, path string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return nil, fmt.Errorf("cli: control plane admin at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cli: control plane admin at %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cli: control plane admin %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// typeNames are the short names users know the xDS resource types by.
var typeNames = map[string]string{
	resource.ClusterType: "CDS", resource.EndpointType: "EDS", resource.ListenerType: "LDS",
	resource.RouteType: "RDS", resource.ExtensionConfigType: "ECDS",
}

func typeName(url string) string {
	if n, ok := typeNames[url]; ok {
		return n
	}
	return url[strings.LastIndex(url, ".")+1:]
}

func printProxyStatus(w io.Writer, status []snapshot.ProxyStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := []string{"NODE", "IDENTITY", "CONNECTED", "SYNCED"}
	for _, url := range snapshot.TypeURLs {
		header = append(header, typeName(url))
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	var problems []string
	for _, p := range status {
		cols := []string{p.Node, p.Identity, yesNo(p.Connected), yesNo(p.Synced() && p.Error == "")}
		for _, url := range snapshot.TypeURLs {
			ts := p.Types[url]
			switch {
			case ts == nil:
				cols = append(cols, "-")
			case ts.Nacked != "":
				cols = append(cols, "NACK "+ts.Nacked)
				msg := fmt.Sprintf("%s %s: refused version %s: %s", p.Node, typeName(url), ts.Nacked, ts.NackError)
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
