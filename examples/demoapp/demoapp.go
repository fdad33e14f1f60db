package demoapp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/portcullis/portcullis/telemetry/serve"
)

// Backend answers every request with a JSON description of it, including the caller's SPIFFE
// ID as its proxy reported it.
func Backend(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"service": name,
			"method":  r.Method,
			"path":    r.URL.Path,
			"caller":  callerID(r.Header.Get("X-Forwarded-Client-Cert")),
		})
	})
}

// callerID extracts URI=... (the peer's SPIFFE ID) from an X-Forwarded-Client-Cert value.
func callerID(xfcc string) string {
	for _, part := range strings.Split(xfcc, ";") {
		if v, ok := strings.CutPrefix(part, "URI="); ok {
			return v
		}
	}
	return ""
}

// Frontend calls the backend at backendURL (its proxy's local outbound listener):
//
//	GET /call?path=/api/items[&method=GET]   with an optional Authorization header, passed on
//
// and answers with the backend's status and body, plus the headers that explain a refusal
// (x-portcullis-decision-id, x-ratelimit-*).
func Frontend(backendURL string) http.Handler {
	client := &http.Client{Timeout: 10 * time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Query().Get("path")
		if !strings.HasPrefix(path, "/") {
			http.Error(w, "query parameter path must start with /", http.StatusBadRequest)
			return
		}
		method := r.URL.Query().Get("method")
		if method == "" {
			method = http.MethodGet
		}
		target, err := url.JoinPath(backendURL, path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), method, target, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if auth := r.Header.Get("Authorization"); auth != "" {
			req.Header.Set("Authorization", auth)
		}
		// Pass the trace context on, so the frontend's and backend's spans form one trace.
		for _, h := range []string{"traceparent", "tracestate", "x-request-id"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "calling backend: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			lk := strings.ToLower(k)
			if strings.HasPrefix(lk, "x-portcullis-") || strings.HasPrefix(lk, "x-ratelimit-") || lk == "content-type" || lk == "www-authenticate" {
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "frontend: GET /call?path=/api/items calls the backend through the mesh")
	})
	return mux
}

// Serve serves h on addr until ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demoapp: %w", err)
	}
	return serve.HTTP(ctx, "demoapp "+addr, &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, ln, time.Second)
}
