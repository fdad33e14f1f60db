package sidecar

import (
	"testing"

	"github.com/portcullis/portcullis/xds/model"
)

// TestProxyCounters sums the counters a real Envoy keeps (names as /stats prints them with the
// translator's stat prefixes): both local filters, the global filters of every route cluster.
func TestProxyCounters(t *testing.T) {
	c := proxyCounters(map[string]uint64{
		"ratelimit.http_local_rate_limit.rate_limited":                        2,
		"ratelimit_verified.http_local_rate_limit.rate_limited":               3,
		"cluster.inbound|8080|app.ratelimit.global_closed.over_limit":         5,
		"cluster.inbound|8080|app.ratelimit.global_open.over_limit":           7,
		"cluster.inbound|9090|app.ratelimit.global_open.over_limit":           1,
		"cluster.inbound|8080|app.ratelimit.global_closed.error":              11,
		"cluster.inbound|8080|app.ratelimit.global_open.error":                13,
		"cluster.inbound|8080|app.ratelimit.global_open.failure_mode_allowed": 13,
		"cluster.inbound|8080|app.ratelimit.global_closed.ok":                 100,
		"http.inbound.ext_authz.portcullis.ok":                                50,
	})
	if c.localLimited != 5 || c.globalLimited != 13 || c.globalErrors[model.FailClosed] != 11 || c.globalErrors[model.FailOpen] != 13 {
		t.Errorf("got %+v; want local 5, global 13, errors closed 11 and open 13", c)
	}
}
