package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/portcullis/portcullis/telemetry/watch"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// DefaultDebounce coalesces bursts of events (a rollout touching many pods) into one rebuild.
const DefaultDebounce = 20 * time.Millisecond

// Options configure a Source.
type Options struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Logger  *slog.Logger
	Meter   metric.Meter
	// Checks run after model.Build, as for the file source (Rego compiles, trust domain).
	Checks   []source.Checker
	Debounce time.Duration
	// Resync is the informers' resync period (0: none; watches are reliable).
	Resync time.Duration
}

// Source keeps the mesh and the endpoints in step with the cluster. It implements
// source.Source; Endpoints serves the snapshot controller.
type Source struct {
	source.Publisher
	opts  Options
	log   *slog.Logger
	loads metric.Int64Counter

	core informers.SharedInformerFactory
	dyn  dynamicinformer.DynamicSharedInformerFactory
	crs  map[string]cache.GenericLister // by kind
	lis  listers

	kick chan struct{}

	mu        sync.Mutex
	status    Status
	objects   map[objectKey]*objectState
	endpoints map[model.Ref][]model.Endpoint
	epChanged watch.Signal
	// docsChanged is notified when a rebuild records the custom resources' generations.
	docsChanged watch.Signal
	lastDocs    string // fingerprint of the last document set built
}

var _ source.Source = (*Source)(nil)

// Status is what the last rebuild found, for the admin API.
type Status struct {
	Version     string         `json:"version"`
	LoadedAt    time.Time      `json:"loadedAt,omitzero"`
	LastAttempt time.Time      `json:"lastAttempt,omitzero"`
	Documents   int            `json:"documents"`
	Services    int            `json:"services"`
	Endpoints   int            `json:"endpoints"`
	Problems    model.Problems `json:"problems"`
}

// objectKey names a custom resource.
type objectKey struct {
	Kind      string
	Namespace string
	Name      string
}

// String names the resource as translate.SourceName names its document: "Kind/namespace/name",
// "Mesh/name".
func (k objectKey) String() string {
	if k.Namespace == "" {
		return k.Kind + "/" + k.Name
	}
	return k.Kind + "/" + k.Namespace + "/" + k.Name
}

// objectState is what the status writer reports about one custom resource.
type objectState struct {
	generation int64
	problems   []string // validation problems of the last attempt; none: accepted
	warnings   []string // what is valid but changed meaning (Mesh.ReachWarnings): Accepted says so
	// live is the generation the live mesh was built from (0: not in the live mesh).
	live int64
}

// New returns a source; Run starts it.
func New(opts Options) (*Source, error) {
	if opts.Client == nil || opts.Dynamic == nil {
		return nil, errors.New("kube: a clientset and a dynamic client are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	s := &Source{
		opts: opts, log: opts.Logger, kick: make(chan struct{}, 1),
		crs: map[string]cache.GenericLister{}, objects: map[objectKey]*objectState{},
		endpoints: map[model.Ref][]model.Endpoint{},
	}
	if opts.Meter != nil {
		var err error
		if s.loads, err = opts.Meter.Int64Counter("portcullis_config_loads",
			metric.WithDescription("Mesh document loads by result (ok, invalid, unchanged).")); err != nil {
			return nil, fmt.Errorf("kube: %w", err)
		}
		if _, err = opts.Meter.Int64ObservableGauge("portcullis_config_problems",
			metric.WithDescription("Validation problems of the last load; non-zero means the live mesh is older than the resources."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(int64(len(s.Status().Problems)))
				return nil
			})); err != nil {
			return nil, fmt.Errorf("kube: %w", err)
		}
	}
	s.core = informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync, informers.WithTransform(slim))
	s.dyn = dynamicinformer.NewDynamicSharedInformerFactory(opts.Dynamic, opts.Resync)
	s.lis = listers{
		services:  s.core.Core().V1().Services().Lister(),
		slices:    s.core.Discovery().V1().EndpointSlices().Lister(),
		pods:      s.core.Core().V1().Pods().Lister(),
		namespace: s.core.Core().V1().Namespaces().Lister(),
	}
	handlers := []cache.SharedIndexInformer{
		s.core.Core().V1().Services().Informer(),
		s.core.Discovery().V1().EndpointSlices().Informer(),
		s.core.Core().V1().Pods().Informer(),
		s.core.Core().V1().Namespaces().Informer(),
	}
	if err := s.core.Discovery().V1().EndpointSlices().Informer().AddIndexers(cache.Indexers{byService: sliceService}); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	for _, kind := range model.Kinds {
		gi := s.dyn.ForResource(schema.GroupVersionResource{Group: v1alpha1.Group, Version: v1alpha1.Version, Resource: v1alpha1.Resource(kind)})
		s.crs[kind] = gi.Lister()
		if _, err := gi.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.trigger() },
			DeleteFunc: func(any) { s.trigger() },
			UpdateFunc: func(oldObj, newObj any) {
				// Status writes (ours) do not change the generation or the labels: ignoring them
				// is what keeps status writes from causing rebuilds and pushes.
				o, ok1 := oldObj.(metav1.Object)
				n, ok2 := newObj.(metav1.Object)
				if ok1 && ok2 && o.GetGeneration() == n.GetGeneration() && maps.Equal(o.GetLabels(), n.GetLabels()) {
					return
				}
				s.trigger()
			},
		}); err != nil {
			return nil, fmt.Errorf("kube: %w", err)
		}
	}
	for _, inf := range handlers {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.trigger() },
			UpdateFunc: func(o, n any) { s.triggerUpdate(o, n) },
			DeleteFunc: func(any) { s.trigger() },
		}); err != nil {
			return nil, fmt.Errorf("kube: %w", err)
		}
	}
	return s, nil
}

func (s *Source) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// triggerUpdate skips updates that change nothing the mesh reads: resyncs (same resource
// version), the kubelet's pod status heartbeats, a Service's load-balancer status, namespace
// annotations. Without this every status heartbeat of every pod in the cluster would rebuild the
// mesh and the endpoints.
func (s *Source) triggerUpdate(oldObj, newObj any) {
	if equality.Semantic.DeepEqual(read(oldObj), read(newObj)) {
		return
	}
	s.trigger()
}

// read is what the source reads of a cached object.
func read(obj any) any {
	switch o := obj.(type) {
	case *corev1.Pod:
		return [...]any{o.Labels, o.Annotations, o.Spec.ServiceAccountName}
	case *corev1.Service:
		return [...]any{o.Labels, o.Spec}
	case *discoveryv1.EndpointSlice:
		return [...]any{o.Labels, o.AddressType, o.Endpoints, o.Ports}
	case *corev1.Namespace:
		return o.Labels
	}
	if m, ok := obj.(metav1.Object); ok {
		return m.GetResourceVersion()
	}
	return obj
}

// Run starts the informers, waits for their caches, publishes the first mesh and rebuilds after
// every change until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	s.core.Start(ctx.Done())
	s.dyn.Start(ctx.Done())
	defer s.core.Shutdown()
	defer s.dyn.Shutdown()
	for typ, ok := range s.core.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("kube: %v cache did not sync", typ)
		}
	}
	for gvr, ok := range s.dyn.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("kube: %s cache did not sync (are the CRDs installed?)", gvr.Resource)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	s.log.Info("kubernetes caches synced")
	for {
		s.rebuild()
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.opts.Debounce):
		}
	}
}

// Status returns what the last rebuild found.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Problems = slices.Clone(st.Problems)
	return st
}

// liveDocuments returns the live mesh version and the generation of each custom resource it was
// built from, by objectKey.String, with a channel closed when either may have changed.
func (s *Source) liveDocuments() (version string, generations map[string]int64, changed <-chan struct{}) {
	changed = s.docsChanged.Changed()
	s.mu.Lock()
	defer s.mu.Unlock()
	generations = make(map[string]int64, len(s.objects))
	for k, st := range s.objects {
		if st.live != 0 {
			generations[k.String()] = st.live
		}
	}
	return s.status.Version, generations, changed
}

// Endpoints returns the endpoints of every mesh service backed by a Kubernetes Service, and a
// channel closed when they change.
func (s *Source) Endpoints() (map[model.Ref][]model.Endpoint, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoints, s.epChanged.Changed()
}

func (s *Source) count(ctx context.Context, result string) {
	if s.loads != nil {
		s.loads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
	}
}

// slim drops what the source never reads from cached objects (managed fields, most of a pod),
// so the caches of a large cluster stay small.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion,
				Labels: o.Labels, Annotations: keep(o.Annotations, v1alpha1.AnnotationInjected, v1alpha1.AnnotationInject),
			},
			Spec:   corev1.PodSpec{ServiceAccountName: o.Spec.ServiceAccountName},
			Status: corev1.PodStatus{PodIP: o.Status.PodIP, Phase: o.Status.Phase},
		}, nil
	case *discoveryv1.EndpointSlice, *corev1.Service, *corev1.Namespace:
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
			if a := m.GetAnnotations(); len(a) > 0 {
				delete(a, corev1.LastAppliedConfigAnnotation)
			}
		}
	}
	return obj, nil
}

func keep(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
