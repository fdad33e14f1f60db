package main

import (
	"context"
	"net"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// discardCollector accepts OTLP trace exports and drops them: the load tool measures what
// exporting costs the authorization service, not what storing costs a collector.
type discardCollector struct {
	collectortrace.UnimplementedTraceServiceServer
}

func (discardCollector) Export(context.Context, *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func startDiscardCollector() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	g := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(g, discardCollector{})
	go func() { _ = g.Serve(ln) }()
	return ln.Addr().String(), g.Stop, nil
}
