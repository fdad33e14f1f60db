package traceview

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Trace is a trace as Jaeger's query API (/api/traces) returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span of a Trace.
type Span struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	StartTime     int64  `json:"startTime"` // µs since the epoch
	Duration      int64  `json:"duration"`  // µs
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []KeyValue `json:"tags"`
	Logs []struct {
		Timestamp int64      `json:"timestamp"` // µs since the epoch
		Fields    []KeyValue `json:"fields"`
	} `json:"logs"`
}

// KeyValue is a span tag or a log field.
type KeyValue struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Process names the service that reported spans.
type Process struct {
	ServiceName string `json:"serviceName"`
}

// Parent returns the span's parent within the trace ("" for a root).
func (s *Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Tag returns a tag's value as text ("" when absent).
func (s *Span) Tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// Client reads Jaeger's query API.
type Client struct {
	URL  string // http://host:port
	HTTP *http.Client
}

// NewClient returns a client of the query API at queryURL.
func NewClient(queryURL string) *Client {
	return &Client{URL: strings.TrimSuffix(queryURL, "/"), HTTP: &http.Client{Timeout: 10 * time.Second}}
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+path, nil)
	if err != nil {
		return fmt.Errorf("traceview: %w", err)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("traceview: jaeger query API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("traceview: jaeger query API %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("traceview: jaeger query API %s: %w", path, err)
	}
	return nil
}

// Services lists the services Jaeger has spans of.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	var r struct{ Data []string }
	err := c.get(ctx, "/api/services", &r)
	return r.Data, err
}

// Operations lists a service's span names.
func (c *Client) Operations(ctx context.Context, service string) ([]string, error) {
	var r struct{ Data []string }
	err := c.get(ctx, "/api/services/"+url.PathEscape(service)+"/operations", &r)
	return r.Data, err
}

// Query selects traces: those with one span of Service (and Operation, when set) carrying every
// tag of Tags and starting in [Start, End]. Jaeger returns at most Limit, the newest first.
type Query struct {
	Service, Operation string
	Tags               map[string]string
	Start, End         time.Time
	Limit              int
}

// Find returns the traces a query selects.
func (c *Client) Find(ctx context.Context, q Query) ([]Trace, error) {
	v := url.Values{"service": {q.Service}, "limit": {strconv.Itoa(q.Limit)},
		"start": {strconv.FormatInt(q.Start.UnixMicro(), 10)}, "end": {strconv.FormatInt(q.End.UnixMicro(), 10)}}
	if q.Operation != "" {
		v.Set("operation", q.Operation)
	}
	if len(q.Tags) > 0 {
		b, err := json.Marshal(q.Tags)
		if err != nil {
			return nil, fmt.Errorf("traceview: %w", err)
		}
		v.Set("tags", string(b))
	}
	var r struct{ Data []Trace }
	err := c.get(ctx, "/api/traces?"+v.Encode(), &r)
	return r.Data, err
}

// Get returns one trace, or nil when Jaeger does not have it.
func (c *Client) Get(ctx context.Context, id string) (*Trace, error) {
	var r struct{ Data []Trace }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/api/traces/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, fmt.Errorf("traceview: %w", err)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("traceview: jaeger query API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("traceview: jaeger query API trace %s: %s", id, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("traceview: trace %s: %w", id, err)
	}
	if len(r.Data) == 0 {
		return nil, nil
	}
	return &r.Data[0], nil
}

// JaegerConfig is a Jaeger v2 configuration: OTLP gRPC in, memory storage, the query API,
// everything on the given loopback addresses and nothing else listening. uiAssets is the
// directory of the Jaeger UI's build (make jaeger builds it into the tool cache); "" leaves the
// placeholder page a Jaeger built from the Go module serves. Jaeger does not trace itself: its
// own spans would mix with the mesh's, and flushing them at shutdown to the receiver it has
// already closed held its exit for seconds.
func JaegerConfig(otlpAddr, queryAddr, queryGRPCAddr, uiAssets string) string {
	ui := ""
	if uiAssets != "" {
		ui = fmt.Sprintf("\n    ui: {assets_path: %q}", uiAssets)
	}
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
extensions:
  jaeger_query:
    storage: {traces: memory}
    enable_tracing: false
    http: {endpoint: %q}
    grpc: {endpoint: %q}%s
  jaeger_storage:
    backends:
      memory: {memory: {max_traces: 100000}}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q}
processors:
  batch: {timeout: 200ms}
exporters:
  jaeger_storage_exporter: {trace_storage: memory}
`, queryAddr, queryGRPCAddr, ui, otlpAddr)
}
