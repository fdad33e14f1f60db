package demorun

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns Debian's chromium, or ends the test: failing it under CI=true (make test
// installs it) and skipping it loudly elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH (make chromium installs Debian's; CI=true: the browser test must run)")
	}
	t.Skip("SKIPPING, NO CHROMIUM: make chromium (root) installs Debian's")
	return ""
}

// browser starts headless Chromium, with the flags that work on a 2-core machine without a
// display or a network, and returns a context for chromedp's actions.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("chromium: %v", err)
	}
	return ctx
}

var decisionHeader = regexp.MustCompile(`(?i)x-portcullis-decision-id: ([0-9A-Z]{26})`)

// readDenied finds the denied request's trace by its decision id in the control plane's
// /traces and in Jaeger's UI, in a real browser, and reads the policy and the reason from each.
func readDenied(t *testing.T, deniedOutput string) {
	t.Helper()
	m := decisionHeader.FindStringSubmatch(deniedOutput)
	if m == nil {
		t.Fatalf("no decision id in the denied request's output:\n%s", deniedOutput)
	}
	id := m[1]
	const policy, reason = "demo/backend-deny-debug", "rule no-debug matched"
	ctx := browser(t)
	start := time.Now()

	// /traces: the request's row by its decision id (spans reach Jaeger in batches: retry), then
	// its trace page, where the decision is shown without a click.
	rowSel := chromedp.CSS(fmt.Sprintf(`tr[data-decision-id=%q]`, id))
	var traceHref string
	deadline := time.Now().Add(60 * time.Second)
	for {
		do(ctx, t, "the /traces list", chromedp.Navigate("http://127.0.0.1:15014/traces?decision_id="+id))
		n := get(ctx, t, "counting rows", chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll('tr[data-decision-id=%q]').length`, id)))
		if n == 1 {
			row := get(ctx, t, "the row", chromedp.Text(rowSel))
			if strings.Contains(row, reason) {
				for _, want := range []string{"GET /debug/vars", "403", "DENY", policy, "no-debug", "frontend → backend"} {
					if !strings.Contains(row, want) {
						t.Errorf("/traces row lacks %q: %s", want, row)
					}
				}
				traceHref = get(ctx, t, "the row's link", chromedp.AttributeValue(chromedp.CSS(string(rowSel)+" a"), "href")).Value
				break
			}
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("no complete /traces row for decision %s after 60 s:\n%s", id, body)
		}
		time.Sleep(time.Second)
	}
	do(ctx, t, "the trace page", chromedp.Navigate("http://127.0.0.1:15014/"+traceHref))
	gotPolicy := get(ctx, t, "the policy", chromedp.Text(chromedp.CSS("#decision #policy")))
	gotReason := get(ctx, t, "the reason", chromedp.Text(chromedp.CSS("#decision #reason")))
	if gotPolicy != policy || gotReason != reason {
		t.Errorf("/traces trace page: policy %q reason %q, want %q %q", gotPolicy, gotReason, policy, reason)
	}
	timeline := get(ctx, t, "the timeline", chromedp.Text(chromedp.CSS("#timeline")))
	for _, want := range []string{"outbound backend.demo", "inbound backend.demo", "authz.Check", "authz.policy.evaluate"} {
		if !strings.Contains(timeline, want) {
			t.Errorf("/traces timeline lacks %q", want)
		}
	}
	t.Logf("/traces: found and read in %s", time.Since(start).Round(time.Millisecond))

	// Jaeger's UI: search by the decision id tag, open the one result, expand the Check span.
	start = time.Now()
	search := "http://127.0.0.1:16686/search?" + url.Values{"service": {"portcullis-controlplane"},
		"tags": {fmt.Sprintf(`{"authz.decision_id":%q}`, id)}, "lookback": {"1h"}, "limit": {"20"}}.Encode()
	checkSpan := `//*[contains(@class,"span-name") and contains(., "authz.Check")]`
	do(ctx, t, "Jaeger's search", chromedp.Navigate(search))
	if title := get(ctx, t, "the title", chromedp.Title()); title != "Jaeger UI" {
		t.Errorf("Jaeger's page title %q: not the Jaeger UI", title)
	}
	result := chromedp.CSS(`a[href^="/trace/"][class*="ResultItemTitle"]`)
	do(ctx, t, "Jaeger's search result", chromedp.WaitVisible(result), chromedp.Click(result))
	do(ctx, t, "the Check span in Jaeger's trace", chromedp.WaitVisible(checkSpan), chromedp.Click(checkSpan))
	do(ctx, t, "the Check span's tags", chromedp.WaitVisible(`//*[contains(text(), "authz.reason")]`))
	page := get(ctx, t, "Jaeger's trace page", chromedp.Text(chromedp.CSS("body")))
	for _, want := range []string{policy, reason, id, "inbound backend.demo", "outbound backend.demo"} {
		if !strings.Contains(page, want) {
			t.Errorf("Jaeger's trace page lacks %q", want)
		}
	}
	t.Logf("Jaeger UI: found and read in %s", time.Since(start).Round(time.Millisecond))
}

// do runs browser steps, each page action bounded by 30 s.
func do(ctx context.Context, t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	get(ctx, t, what, chromedp.Steps(steps...))
}

// get runs an action that reads a value.
func get[T any](browser context.Context, t *testing.T, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(browser, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		ctx, cancel := context.WithTimeout(browser, 5*time.Second)
		defer cancel()
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("%s: %v\nthe page:\n%.3000s", what, err, body)
	}
	return v
}
