package demorun

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// printed is a command the demo printed, as printed.
type printed struct{ label, command string }

// printedCommands reads the commands of the demo's "Try:" (label, then the command) and
// "Look:" (lines that run the portcullis binary) sections.
func printedCommands(t *testing.T, out string) []printed {
	t.Helper()
	var cmds []printed
	section := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "Try:"), strings.HasPrefix(line, "Look:"):
			section = line
			continue
		case line == "" || !strings.HasPrefix(line, "  "):
			if line != "" {
				section = ""
			}
			continue
		}
		switch section {
		case "Try:":
			// "  label       command": labels start at column 2, commands at 14.
			if len(line) > 14 && line[2] != ' ' {
				cmds = append(cmds, printed{strings.TrimSpace(line[:14]), strings.TrimSpace(line[14:])})
			}
		case "Look:":
			text := strings.TrimSpace(line)
			if strings.Contains(text, "portcullis ") && !strings.HasPrefix(text, "http") {
				cmd, _, _ := strings.Cut(text, "   ") // the description follows after a gap
				cmds = append(cmds, printed{strings.TrimSpace(cmd), strings.TrimSpace(cmd)})
			}
		}
	}
	return cmds
}

// expected says what each printed command must show; a printed command without an entry here
// fails the test, so the demo cannot print one nobody ran.
var expected = map[string]*regexp.Regexp{
	"allowed":                       regexp.MustCompile(`"caller":"spiffe://portcullis.local/ns/demo/sa/frontend"`),
	"denied":                        regexp.MustCompile(`(?is)HTTP/1.1 403.*x-portcullis-decision-id: [0-9A-Z]{26}`),
	"no token":                      regexp.MustCompile(`HTTP/1.1 401`),
	"JWT":                           regexp.MustCompile(`"path":"/admin/stats"`),
	"429":                           regexp.MustCompile(`^200 .*429 `),
	"quota":                         regexp.MustCompile(`^200 200 200 429 `),
	"mTLS only":                     regexp.MustCompile(`Empty reply from server`),
	"./bin/portcullis proxy status": regexp.MustCompile(`(?s)backend-1\.demo .*yes.*frontend-1\.demo .*yes`),
	"./bin/portcullis proxy config frontend-1": regexp.MustCompile(`(?s)outbound.*backend`),
}

// runPrinted runs each printed command with bash in the repository, as a user pastes it, and
// returns the outputs by label.
func runPrinted(t *testing.T, root string, cmds []printed) map[string]string {
	t.Helper()
	outs := map[string]string{}
	for _, c := range cmds {
		want, ok := expected[c.label]
		if !ok {
			t.Errorf("the demo printed %q (%s), which this test does not know", c.command, c.label)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-c", c.command)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil && c.label != "mTLS only" { // curl exits non-zero when refused
			t.Errorf("%s: %s: %v\n%s", c.label, c.command, err, out)
		}
		if !want.Match(out) {
			t.Errorf("%s: %s printed\n%s\nwant %s", c.label, c.command, out, want)
		}
		outs[c.label] = string(out)
	}
	for label := range expected {
		if _, ok := outs[label]; !ok {
			t.Errorf("the demo no longer prints %q", label)
		}
	}
	return outs
}
