package translate

import (
	"cmp"
	"slices"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/portcullis/portcullis/xds/model"
)

// outboundEndpoints assigns an upstream cluster the ready instances that serve its port, in a
// stable order. An upstream with no instance up gets an empty assignment, which Envoy answers
// with 503 rather than waiting.
func (t *translator) outboundEndpoints(cluster string, svc model.Ref, port uint32) {
	eps := slices.Clone(t.in.Endpoints[svc])
	slices.SortFunc(eps, func(a, b model.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	var lbs []*endpointv3.LbEndpoint
	for _, ep := range eps {
		if ep.ServicePort == port && !ep.NotReady {
			lbs = append(lbs, lbEndpoint(ep.Address, ep.Port))
		}
	}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	t.res.Endpoints = append(t.res.Endpoints, cla)
}
