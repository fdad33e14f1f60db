package snapshot

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/xds/translate"
)

// TestLogPlacements: where a route's policies are decided is logged when it changes, with the
// reason when it is the authorization service, and not again while it stays.
func TestLogPlacements(t *testing.T) {
	var buf bytes.Buffer
	c := &Controller{log: slog.New(slog.NewTextHandler(&buf, nil))}
	native := map[string]translate.AuthzPlacement{"inbound|8080|backend.demo": {Native: true}}
	timed := map[string]translate.AuthzPlacement{"inbound|8080|backend.demo": {Reason: "demo/office-hours: when[0]: time"}}
	c.logPlacements("backend-1.demo", nil, native)
	c.logPlacements("backend-1.demo", native, native)
	c.logPlacements("backend-1.demo", native, timed)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "route decided in Envoy") ||
		!strings.Contains(lines[1], "route decided by the authorization service") || !strings.Contains(lines[1], `reason="demo/office-hours: when[0]: time"`) {
		t.Fatalf("log:\n%s", buf.String())
	}
}
