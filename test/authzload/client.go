package main

import (
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/testca"
)

const serverID = "spiffe://portcullis.local/ns/portcullis/sa/authz"

type material struct {
	ca     *testca.CA
	server *testca.SVID
	proxy  *testca.SVID
	// source is the calling workload's SVID, whose certificate Envoy passes in every Check.
	source *testca.SVID
	token  string
	mesh   string
}

// toolTB adapts the authztest helpers (written for tests) to this command: a failure becomes
// an error returned by newMaterial.
type toolTB struct{}

type toolFailure struct{ msg string }

func (toolTB) Helper() {}
func (toolTB) Fatalf(format string, args ...any) {
	panic(toolFailure{fmt.Sprintf(format, args...)})
}

func newMaterial() (m *material, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(toolFailure)
			if !ok {
				panic(r)
			}
			m, err = nil, fmt.Errorf("making test material: %s", f.msg)
		}
	}()
	t := toolTB{}
	ca := testca.New(t, "portcullis.local")
	key := authztest.NewKey(t, "ES256", "k1")
	claims := authztest.BenchClaims()
	claims["exp"] = time.Now().Add(24 * time.Hour).Unix()
	return &material{
		ca:     ca,
		server: ca.SVID(t, serverID),
		proxy:  ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend"),
		source: ca.SVID(t, authztest.BenchPrincipal),
		token:  key.Sign(t, claims, nil),
		mesh:   authztest.BenchMesh(authztest.JWKS(key), false),
	}, nil
}

type client struct {
	conns []*grpc.ClientConn
	req   *preEncoded
	next  atomic.Uint64
}

// preEncoded is the CheckRequest marshalled once. Envoy's C++ client marshals a request for a
// fraction of what Go's reflection-based marshalling costs; the generator should not spend the
// CPU of the machine the server is measured on re-encoding the same bytes.
type preEncoded struct{ b []byte }

// rawCodec sends preEncoded messages as they are and handles everything else (the responses) as
// gRPC's proto codec does; its name keeps the content type the server expects.
type rawCodec struct{ fallback encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(p.b)}, nil
	}
	return c.fallback.Marshal(v)
}
func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.fallback.Unmarshal(data, v) }
func (rawCodec) Name() string                                  { return "proto" }

func newClient(addr string, m *material, n int) (*client, error) {
	creds := credentials.NewTLS(tlsconfig.MTLSClientConfig(m.proxy.X509SVID(), m.ca.Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverID))))
	b, err := proto.Marshal(benchRequest(m.token, string(m.source.CertPEM)))
	if err != nil {
		return nil, err
	}
	codec := rawCodec{fallback: encoding.GetCodecV2("proto")}
	c := &client{req: &preEncoded{b}}
	for range n {
		// Fixed windows, as Envoy's HTTP/2 client has (no BDP probing).
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
			grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec)))
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

func (c *client) close() {
	for _, conn := range c.conns {
		_ = conn.Close() // only fails for a connection closed twice
	}
}

// benchRequest is what Envoy sends for the benchmark request, configured as the translator
// configures it: the headers as header_map, one entry per line (encode_raw_headers), and the
// source's certificate, URL-encoded PEM (include_peer_certificate).
func benchRequest(token, sourceCertPEM string) *authv3.CheckRequest {
	var headers []*corev3.HeaderValue
	for _, kv := range [][2]string{
		{":authority", "backend.demo"}, {":method", authztest.BenchMethod}, {":path", authztest.BenchPath}, {":scheme", "http"},
		{"authorization", "Bearer " + token}, {"x-tenant", authztest.BenchTenant}, {"user-agent", "authzload"},
		{"x-request-id", "b2c2a9b4-1d3e-4b8e-9a55-2f5b0a3d9e11"}, {"accept", "*/*"},
	} {
		headers = append(headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: authztest.BenchPrincipal, Certificate: url.QueryEscape(sourceCertPEM)},
		Destination: &authv3.AttributeContext_Peer{Principal: "spiffe://portcullis.local/ns/demo/sa/backend"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: authztest.BenchMethod, Path: authztest.BenchPath, Host: "backend.demo", Scheme: "http", Protocol: "HTTP/1.1",
			HeaderMap: &corev3.HeaderMap{Headers: headers},
		}},
		ContextExtensions: map[string]string{"service": "backend", "namespace": "demo", "port": "8080"},
	}}
}

func (c *client) check(ctx context.Context) error {
	conn := c.conns[c.next.Add(1)%uint64(len(c.conns))]
	resp := &authv3.CheckResponse{}
	if err := conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, c.req, resp); err != nil {
		return err
	}
	if resp.GetOkResponse() == nil {
		return fmt.Errorf("denied: %v", resp.GetDeniedResponse().GetBody())
	}
	return nil
}

func (c *client) checkOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.check(cctx)
}

type fixedResult struct {
	achieved                 float64
	p50, p90, p99, p999, max time.Duration
	errors                   int64
	serverCPU, clientCPU     time.Duration
	// wireP50 and wireP99 are measured from when each check was sent rather than due: the
	// difference is the load generator's own scheduling delay.
	wireP50, wireP99 time.Duration
}

// fixedRate sends rate checks per second for d (after warmup), each measured from the moment it
// was due (test/loadgen).
func (c *client) fixedRate(ctx context.Context, rate int, warmup, d time.Duration) (fixedResult, error) {
	res, err := loadgen.Fixed{Rate: float64(rate), Warmup: warmup, Duration: d}.Run(ctx, c.do)
	if err != nil {
		return fixedResult{}, err
	}
	if len(res.Samples) == 0 {
		return fixedResult{}, fmt.Errorf("no checks measured")
	}
	lat, wire := res.Latencies(), res.WireLatencies()
	return fixedResult{
		achieved: res.Achieved(),
		p50:      lat.Percentile(50), p90: lat.Percentile(90), p99: lat.Percentile(99), p999: lat.Percentile(99.9),
		max: lat[len(lat)-1], errors: int64(res.Errors()),
		wireP50: wire.Percentile(50), wireP99: wire.Percentile(99),
	}, nil
}

type peakResult struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
}

// maxThroughput runs callers that each send the next check as soon as the last one is
// answered, for d after warmup.
func (c *client) maxThroughput(ctx context.Context, callers int, warmup, d time.Duration) (peakResult, error) {
	res, err := loadgen.Peak{Callers: callers, Warmup: warmup, Duration: d}.Run(ctx, c.do)
	if err != nil {
		return peakResult{}, err
	}
	if len(res.Latencies) == 0 {
		return peakResult{}, fmt.Errorf("no checks completed")
	}
	return peakResult{rate: res.Rate, p50: res.Latencies.Percentile(50), p99: res.Latencies.Percentile(99), errors: res.Errors}, nil
}

// do is one check, as a load generator's request.
func (c *client) do(ctx context.Context, _ int) error { return c.check(ctx) }
