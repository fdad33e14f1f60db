package kube

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

type listers struct {
	services  corelisters.ServiceLister
	slices    discoverylisters.EndpointSliceLister
	pods      corelisters.PodLister
	namespace corelisters.NamespaceLister
}

// byService indexes EndpointSlices by "namespace/service".
const byService = "service"

func sliceService(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

// kubeService is a Kubernetes Service with what the mesh needs from around it.
type kubeService struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	// accounts are the service accounts of the injected pods behind it, sorted.
	accounts []string
	// injected says whether any of its pods carries the sidecar.
	injected bool
}

// clusterView is one consistent read of the caches.
type clusterView struct {
	services map[model.Ref]*kubeService
	// enabled namespaces carry portcullis.dev/inject=enabled.
	enabled map[string]bool
	pods    map[model.Ref]*corev1.Pod
}

func (s *Source) view() *clusterView {
	v := &clusterView{services: map[model.Ref]*kubeService{}, enabled: map[string]bool{}, pods: map[model.Ref]*corev1.Pod{}}
	if nss, err := s.lis.namespace.List(labels.Everything()); err == nil {
		for _, ns := range nss {
			if ns.Labels[v1alpha1.LabelInject] == v1alpha1.InjectEnabled {
				v.enabled[ns.Name] = true
			}
		}
	}
	if pods, err := s.lis.pods.List(labels.Everything()); err == nil {
		for _, p := range pods {
			v.pods[model.Ref{Namespace: p.Namespace, Name: p.Name}] = p
		}
	}
	svcs, err := s.lis.services.List(labels.Everything())
	if err != nil {
		return v
	}
	indexer := s.core.Discovery().V1().EndpointSlices().Informer().GetIndexer()
	for _, svc := range svcs {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		ks := &kubeService{svc: svc}
		items, _ := indexer.ByIndex(byService, svc.Namespace+"/"+svc.Name)
		accounts := map[string]bool{}
		for _, it := range items {
			es, ok := it.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			ks.slices = append(ks.slices, es)
			for _, ep := range es.Endpoints {
				if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
					continue
				}
				pod := v.pods[model.Ref{Namespace: es.Namespace, Name: ep.TargetRef.Name}]
				// Only pods with the sidecar are endpoints, so only their service accounts are
				// identities the service's callers accept.
				if pod == nil || !injected(pod) {
					continue
				}
				ks.injected = true
				accounts[cmp.Or(pod.Spec.ServiceAccountName, "default")] = true
			}
		}
		slices.SortFunc(ks.slices, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
		for sa := range accounts {
			ks.accounts = append(ks.accounts, sa)
		}
		slices.Sort(ks.accounts)
		v.services[model.Ref{Namespace: svc.Namespace, Name: svc.Name}] = ks
	}
	return v
}

func injected(p *corev1.Pod) bool {
	_, ok := p.Annotations[v1alpha1.AnnotationInjected]
	return ok
}

// meshServices completes the portcullis Services with what their Kubernetes Services say
// (cluster IPs; service accounts when none are declared) and derives a mesh service from every
// other meshed Kubernetes Service. It returns the derived documents and the set of mesh services
// backed by a Kubernetes Service.
func (s *Source) meshServices(v *clusterView, docs []model.Document) ([]model.Document, map[model.Ref]bool) {
	declared := map[model.Ref]*model.ServiceDoc{}
	for _, d := range docs {
		if sd, ok := d.Object.(*model.ServiceDoc); ok {
			declared[model.RefOf(sd)] = sd
		}
	}
	var derived []model.Document
	backed := map[model.Ref]bool{}
	refs := make([]model.Ref, 0, len(v.services))
	for ref := range v.services {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, b model.Ref) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, ref := range refs {
		ks := v.services[ref]
		if sd := declared[ref]; sd != nil {
			backed[ref] = true
			for _, ip := range clusterIPs(ks.svc) {
				if !slices.Contains(sd.Spec.Addresses, ip) {
					sd.Spec.Addresses = append(sd.Spec.Addresses, ip)
				}
			}
			if len(sd.Spec.ServiceAccounts) == 0 {
				sd.Spec.ServiceAccounts = slices.Clone(ks.accounts)
			}
			continue
		}
		if !v.enabled[ref.Namespace] && !ks.injected {
			continue
		}
		ports := meshPorts(ks.svc)
		if len(ports) == 0 {
			continue
		}
		sd := &model.ServiceDoc{
			TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindService},
			Metadata: model.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace},
			Spec:     model.ServiceSpec{ServiceAccounts: slices.Clone(ks.accounts), Ports: ports, Addresses: clusterIPs(ks.svc)},
		}
		if errs := sd.Validate(); len(errs) > 0 {
			// A Service the mesh cannot describe stays out of it (its traffic passes through)
			// rather than freezing every other service's configuration.
			s.log.Debug("kubernetes service not meshed", "service", ref.String(), "field", string(errs[0].Field), "problem", errs[0].Message)
			continue
		}
		backed[ref] = true
		derived = append(derived, model.Document{Origin: model.Origin{File: "kubernetes services/" + ref.Namespace + "/" + ref.Name}, Object: sd})
	}
	return derived, backed
}

func clusterIPs(svc *corev1.Service) []string {
	var out []string
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	if len(out) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		out = append(out, svc.Spec.ClusterIP)
	}
	return out
}

// meshPorts are the TCP ports of a Service the mesh understands: appProtocol first (http,
// kubernetes.io/h2c, grpc), then the port name's prefix (http, http2/h2c, grpc, as Istio and
// Linkerd read them). Other ports are left to pass through.
func meshPorts(svc *corev1.Service) []model.ServicePort {
	var out []model.ServicePort
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		proto, ok := PortProtocol(p.Name, p.AppProtocol)
		if !ok {
			continue
		}
		name := p.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", strings.ToLower(string(proto)), p.Port)
		}
		out = append(out, model.ServicePort{Name: name, Port: uint32(p.Port), Protocol: proto})
	}
	return out
}

// PortProtocol reads a Kubernetes service port's application protocol from its appProtocol or,
// without one, from its name ("http", "http-web", "grpc-api", "h2c").
func PortProtocol(name string, appProtocol *string) (model.Protocol, bool) {
	if appProtocol != nil {
		switch strings.ToLower(*appProtocol) {
		case "http", "https":
			return model.ProtocolHTTP, true
		case "http2", "h2c", "kubernetes.io/h2c":
			return model.ProtocolHTTP2, true
		case "grpc":
			return model.ProtocolGRPC, true
		}
		return "", false
	}
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	switch prefix {
	case "http":
		return model.ProtocolHTTP, true
	case "http2", "h2c":
		return model.ProtocolHTTP2, true
	case "grpc":
		return model.ProtocolGRPC, true
	}
	return "", false
}

// meshEndpoints are the addresses of the pods behind each mesh service backed by a Kubernetes
// Service, per service port. Pods without the sidecar are left out (they cannot speak mesh
// mTLS); endpoints that are not ready are kept but marked, so only their own proxy uses them.
func (s *Source) meshEndpoints(v *clusterView, backed map[model.Ref]bool) map[model.Ref][]model.Endpoint {
	out := make(map[model.Ref][]model.Endpoint, len(backed))
	for ref := range backed {
		ks := v.services[ref]
		byName := map[string]uint32{}
		for _, p := range ks.svc.Spec.Ports {
			byName[p.Name] = uint32(p.Port)
		}
		seen := map[model.Endpoint]bool{}
		var eps []model.Endpoint
		for _, es := range ks.slices {
			if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
				continue
			}
			for _, sp := range es.Ports {
				if sp.Port == nil || (sp.Protocol != nil && *sp.Protocol != corev1.ProtocolTCP) {
					continue
				}
				name := ""
				if sp.Name != nil {
					name = *sp.Name
				}
				svcPort, ok := byName[name]
				if !ok {
					continue
				}
				for _, ep := range es.Endpoints {
					e, ok := endpoint(v, es.Namespace, ep, uint32(*sp.Port), svcPort)
					if ok && !seen[e] {
						seen[e] = true
						eps = append(eps, e)
					}
				}
			}
		}
		slices.SortFunc(eps, func(a, b model.Endpoint) int {
			return cmp.Or(cmp.Compare(a.ServicePort, b.ServicePort), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
		})
		out[ref] = eps
	}
	return out
}

func endpoint(v *clusterView, ns string, ep discoveryv1.Endpoint, port, svcPort uint32) (model.Endpoint, bool) {
	if len(ep.Addresses) == 0 {
		return model.Endpoint{}, false
	}
	e := model.Endpoint{Address: ep.Addresses[0], Port: port, ServicePort: svcPort}
	if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
		pod := v.pods[model.Ref{Namespace: ns, Name: ep.TargetRef.Name}]
		if pod != nil && !injected(pod) {
			return model.Endpoint{}, false
		}
		e.Workload = ep.TargetRef.Name + "." + ns
	}
	ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
	if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
		ready = false
	}
	e.NotReady = !ready
	return e, true
}

// publishEndpoints replaces the endpoints when they changed and wakes waiters.
func (s *Source) publishEndpoints(eps map[model.Ref][]model.Endpoint) {
	n := 0
	for _, list := range eps {
		n += len(list)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Endpoints = n
	if equalEndpoints(s.endpoints, eps) {
		return
	}
	s.endpoints = eps
	s.epChanged.Notify()
}

func equalEndpoints(a, b map[model.Ref][]model.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !slices.Equal(va, vb) {
			return false
		}
	}
	return true
}
