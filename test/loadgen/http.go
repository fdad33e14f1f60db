package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// NewClient returns an HTTP client that keeps up to conns connections to each host alive, as a
// load generator needs (the default keeps 2 and opens a new connection for every other request).
func NewClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// HTTP sends one request per Do call and reads the whole response.
type HTTP struct {
	Client *http.Client
	Method string // GET unless set
	URL    string
	Header http.Header
	// OK says which statuses are a success (2xx unless set).
	OK func(status int) bool
	// OnResponse, when set, sees request i's response (its body already read).
	OnResponse func(i int, resp *http.Response)
}

// Do implements the Do function of a run.
func (h HTTP) Do(ctx context.Context, i int) error {
	req, err := http.NewRequestWithContext(ctx, cmp.Or(h.Method, http.MethodGet), h.URL, nil)
	if err != nil {
		return err
	}
	for k, v := range h.Header {
		req.Header[k] = v
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if h.OnResponse != nil {
		h.OnResponse(i, resp)
	}
	if err != nil {
		return fmt.Errorf("reading the response: %w", err)
	}
	ok := h.OK
	if ok == nil {
		ok = func(s int) bool { return s >= 200 && s < 300 }
	}
	if !ok(resp.StatusCode) {
		return &StatusError{Status: resp.StatusCode}
	}
	return nil
}

// StatusError is a response with a status the run did not expect.
type StatusError struct{ Status int }

func (e *StatusError) Error() string { return fmt.Sprintf("status %d", e.Status) }
