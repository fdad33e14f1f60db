package datapath

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
)

// BenchmarkChangeReachesOpenConnection measures how long a change written to the mesh takes to
// reach requests on connections that are already open, and how many new connections it costs:
// the frontend keeps its connection to the backend's inbound listener, which is what the change
// configures. Each iteration makes two changes and times each from the write until a request
// shows it, sending requests back to back on one client connection:
//
//   - rate-limit: a RateLimitPolicy of one request per hour on a new path; shown by a 429;
//   - authz-on: the Mesh's authorization mode from OFF back to ENFORCE; shown by a request
//     without a token getting 401 (while OFF it passes).
//
// Reported: the median time of each (ms), and the connections the backend's inbound listener
// accepted per change. Run with -benchtime Nx (each iteration takes a few seconds).
func BenchmarkChangeReachesOpenConnection(b *testing.B) {
	m := startMesh(b)
	defer m.close()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	get := func(path, token string) (int, error) {
		req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(m.meshURL, "/api/items")+path, nil)
		if err != nil {
			return 0, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, err
	}
	// accepted counts the connections the backend's inbound listener has accepted.
	accepted := func() int {
		_, body, err := meshtest.Get("http://" + m.envoys[0] + "/stats?filter=^http.inbound.downstream_cx_total$")
		if err != nil {
			b.Fatal(err)
		}
		_, v, _ := strings.Cut(strings.TrimSpace(body), ": ")
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("backend stats: %q: %v", body, err)
		}
		return n
	}
	// until sends requests back to back until one gets want and returns how long after start;
	// any answer but ok and want fails the benchmark.
	until := func(start time.Time, path, token string, ok, want int) time.Duration {
		for time.Since(start) < 30*time.Second {
			code, err := get(path, token)
			if err != nil {
				b.Fatalf("GET %s: %v", path, err)
			}
			switch code {
			case want:
				return time.Since(start)
			case ok:
			default:
				b.Fatalf("GET %s: %d, want %d or %d", path, code, ok, want)
			}
		}
		b.Fatalf("GET %s: no %d after 30s", path, want)
		return 0
	}
	settle := func(nodes ...string) {
		proctest.Eventually(b, 30*time.Second, func() error { return m.c.Synced(nodes...) }, "proxies synced")
	}
	var limitTimes, authzTimes []time.Duration
	conns := 0
	for i := range b.N {
		path := "/api/change-" + strconv.Itoa(i)
		if code, err := get(path, m.token); err != nil || code != http.StatusOK {
			b.Fatalf("GET %s before the change: %d %v", path, code, err)
		}
		before := accepted()
		start := time.Now()
		m.c.Write("change.yaml", fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: change, namespace: bench}
spec:
  selector: {service: backend}
  limits:
    - name: probe
      pathPrefix: %s
      bucket: {maxTokens: 1, fillInterval: 1h}
`, path))
		limitTimes = append(limitTimes, until(start, path, m.token, http.StatusOK, http.StatusTooManyRequests))
		settle("backend-1."+namespace, "frontend-1."+namespace)
		conns += accepted() - before

		m.c.Write("mesh.yaml", meshDoc("OFF", "extAuthz"))
		proctest.Eventually(b, 30*time.Second, func() error {
			if code, err := get("/api/items", ""); err != nil || code != http.StatusOK {
				return fmt.Errorf("%d %v", code, err)
			}
			return m.c.Synced("backend-1."+namespace, "frontend-1."+namespace)
		}, "authorization OFF")
		before = accepted()
		start = time.Now()
		m.c.Write("mesh.yaml", meshDoc("ENFORCE", "extAuthz"))
		authzTimes = append(authzTimes, until(start, "/api/items", "", http.StatusOK, http.StatusUnauthorized))
		settle("backend-1."+namespace, "frontend-1."+namespace)
		conns += accepted() - before
	}
	b.ReportMetric(ms1(median(limitTimes)), "rate-limit-ms")
	b.ReportMetric(ms1(median(authzTimes)), "authz-on-ms")
	b.ReportMetric(float64(conns)/float64(2*b.N), "new-conns/change")
	b.ReportMetric(0, "ns/op") // an iteration's time is mostly waiting
}
