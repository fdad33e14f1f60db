package demoapp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestFrontendCallsBackend(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What a backend proxy adds: the caller's identity.
		r.Header.Set("X-Forwarded-Client-Cert", `By=spiffe://d/ns/demo/sa/backend;Hash=ab;URI=spiffe://d/ns/demo/sa/frontend`)
		if r.Header.Get("Authorization") != "Bearer t" {
			w.Header().Set("X-Portcullis-Decision-Id", "d-1")
			http.Error(w, "denied", http.StatusForbidden)
			return
		}
		Backend("backend").ServeHTTP(w, r)
	}))
	t.Cleanup(backend.Close)
	front := httptest.NewServer(Frontend(backend.URL))
	t.Cleanup(front.Close)

	req, _ := http.NewRequest(http.MethodGet, front.URL+"/call?path=/api/items", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || got["path"] != "/api/items" || got["caller"] != "spiffe://d/ns/demo/sa/frontend" {
		t.Errorf("%d %v", resp.StatusCode, got)
	}

	resp, err = http.Get(front.URL + "/call?path=/admin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Portcullis-Decision-Id") != "d-1" {
		t.Errorf("denied call: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := http.Get(front.URL + "/call?path=relative"); resp.StatusCode != 400 {
		t.Errorf("bad path: %d", resp.StatusCode)
	}
}
