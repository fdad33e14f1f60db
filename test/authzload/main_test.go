package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		if err := serve(dir); err != nil {
			os.Stderr.WriteString("authzload server: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestLoadToolRuns keeps the load tool working: a short, slow run that must finish without
// errors (the real measurement is `make bench`).
func TestLoadToolRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, config{rate: 200, duration: 500 * time.Millisecond, warmup: 100 * time.Millisecond, conns: 1, concurrency: []int{4}, runs: 1, p99Target: time.Second}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"fixed 200/s", "errors 0", "max throughput", "target p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
