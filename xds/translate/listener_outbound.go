package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// outbound builds the local listener (127.0.0.1:<localPort>) through which the application
// calls one upstream, its route, the upstream's cluster and its endpoints. The route retries only
// what is safe for every method — the request never reached an application — on another
// instance, so an instance that dies or restarts costs no request that was not already in flight
// to it. Retrying requests an application may have seen stays the application's decision.
func (t *translator) outbound(u model.ResolvedUpstream) {
	ref := u.Service.Ref
	cluster := t.outboundCluster(u.Service, u.Port.Port)
	t.outboundEndpoints(cluster, ref, u.Port.Port)
	name := OutboundListenerName(u.LocalPort, ref)
	t.res.Listeners = append(t.res.Listeners, &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress("127.0.0.1", u.LocalPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{t.outboundHCM(name, ref, []*routev3.VirtualHost{t.outboundVirtualHost(cluster, ref)})},
		}},
	})
	t.source(name, t.p.Workload, u.Service.Doc, t.p.Mesh.Config)
}

// Retries of requests no application has seen, documented in docs/xds.md.
const (
	safeRetryOn          = "connect-failure,refused-stream,reset-before-request"
	safeRetries          = 2
	retryHostSelectTries = 3
)

// safeRetries retries a request that failed before it reached the upstream's application
// (connection refused or reset before the request was sent, HTTP/2 REFUSED_STREAM), each time
// on an instance not tried before.
func (t *translator) safeRetries() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:    safeRetryOn,
		NumRetries: wrapperspb.UInt32(safeRetries),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: t.any(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: retryHostSelectTries,
	}
}
