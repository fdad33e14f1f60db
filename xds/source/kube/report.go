package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/portcullis/portcullis/xds/snapshot"
)

// Every replica serves its own proxies, so no replica's ledger knows them all: each publishes
// what it counts in a ConfigMap of its own, and the status writer sums them.
const (
	// ReportPrefix begins the name of a replica's report; its pod name ends it.
	ReportPrefix = "portcullis-programmed-"
	// ReportLabel marks the reports (value "programmed"), which the status writer lists.
	ReportLabel = "portcullis.dev/report"
	reportValue = "programmed"
	reportKey   = "report.json"
	// maxReport keeps a report under the API server's 1 MiB object limit, with room for metadata.
	maxReport = 900 << 10
)

// Report is what one control-plane replica counts of the proxies it serves: the data of its
// ConfigMap ReportPrefix+<pod> in the control plane's namespace.
type Report struct {
	// Replica is the pod name.
	Replica string `json:"replica"`
	// MeshVersion is the replica's live mesh.
	MeshVersion string `json:"meshVersion"`
	// Updated is when the replica wrote it: it rewrites an unchanged report every Refresh, and the
	// status writer ignores reports older than its Stale limit.
	Updated time.Time `json:"updated"`
	// Documents are the custom resources of the replica's live mesh, by "Kind/namespace/name",
	// with the generation it was built from and its proxies' counts.
	Documents map[string]ReportedDocument `json:"documents"`
}

// ReportedDocument is one custom resource in a Report.
type ReportedDocument struct {
	Generation int64 `json:"generation"`
	snapshot.DocumentCount
}

// ProxyCounts counts a replica's proxies per document (snapshot.Ledger).
type ProxyCounts interface {
	Documents(meshVersion string) (counts map[string]snapshot.DocumentCount, settled bool)
	Changed() <-chan struct{}
}

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	Client  kubernetes.Interface
	Source  *Source
	Proxies ProxyCounts
	// Namespace is the control plane's; Pod this replica's pod name, which names the report and,
	// as its owner, deletes it with the pod.
	Namespace, Pod string
	Logger         *slog.Logger
	// Interval is the shortest time between two counts (1s unless set); Refresh the longest
	// between two writes (10s unless set), so that a report that stops moving is known stale.
	Interval, Refresh time.Duration
}

// Reporter publishes this replica's Report whenever its counts change, at most once per
// Interval. Run it on every replica.
type Reporter struct {
	opts ReporterOptions
	log  *slog.Logger
	name string
}

// NewReporter returns a reporter.
func NewReporter(opts ReporterOptions) (*Reporter, error) {
	if opts.Client == nil || opts.Source == nil || opts.Proxies == nil || opts.Namespace == "" || opts.Pod == "" {
		return nil, errors.New("kube: a reporter needs a client, the source, the proxy counts, a namespace and a pod name")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 10 * time.Second
	}
	return &Reporter{opts: opts, log: opts.Logger, name: ReportPrefix + opts.Pod}, nil
}

// Run writes the report until ctx ends, then deletes it: the replica's proxies go elsewhere.
func (r *Reporter) Run(ctx context.Context) error {
	owner := r.owner(ctx)
	defer r.remove()
	var last map[string]ReportedDocument
	var lastVersion string
	var written, retry time.Time
	failures := 0
	for {
		proxiesChanged := r.opts.Proxies.Changed()
		rep, changed := r.count()
		wait := r.opts.Refresh - time.Since(written)
		due := written.IsZero() || wait <= 0 || (rep != nil && (rep.MeshVersion != lastVersion || !maps.Equal(rep.Documents, last)))
		if rep != nil && due && !time.Now().Before(retry) {
			if err := r.write(ctx, rep, owner); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.log.Warn("writing this replica's proxy counts", "configmap", r.opts.Namespace+"/"+r.name, "err", err)
				failures++
				wait = min(r.opts.Interval<<min(failures, 8), r.opts.Refresh) // back off
				retry = time.Now().Add(wait)
			} else {
				last, lastVersion, written, wait, failures = rep.Documents, rep.MeshVersion, time.Now(), r.opts.Refresh, 0
			}
		}
		if d := time.Until(retry); d > 0 && d < wait {
			wait = d
		}
		timer := time.NewTimer(max(wait, r.opts.Interval))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-proxiesChanged:
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
		// At most one count per interval, however often proxies ACK.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.opts.Interval):
		}
	}
}

// count returns this replica's report, or nil while it has no live mesh or its proxies are not
// all built from it yet, and a channel closed when the live documents change.
func (r *Reporter) count() (*Report, <-chan struct{}) {
	version, generations, changed := r.opts.Source.liveDocuments()
	if version == "" {
		return nil, changed
	}
	counts, settled := r.opts.Proxies.Documents(version)
	if !settled {
		return nil, changed
	}
	docs := make(map[string]ReportedDocument, len(generations))
	for doc, gen := range generations {
		docs[doc] = ReportedDocument{Generation: gen, DocumentCount: counts[doc]}
	}
	return &Report{Replica: r.opts.Pod, MeshVersion: version, Documents: docs}, changed
}

// owner is the replica's pod as the report's owner, so the report goes with the pod. Without
// one (a control plane run outside the cluster) the report is known gone once stale.
func (r *Reporter) owner(ctx context.Context) []metav1.OwnerReference {
	pod, err := r.opts.Client.CoreV1().Pods(r.opts.Namespace).Get(ctx, r.opts.Pod, metav1.GetOptions{})
	if err != nil {
		r.log.Warn("this replica's pod not found: its proxy counts count only while fresh", "pod", r.opts.Namespace+"/"+r.opts.Pod, "err", err)
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}}
}

func (r *Reporter) write(ctx context.Context, rep *Report, owner []metav1.OwnerReference) error {
	rep.Updated = time.Now().UTC().Truncate(time.Second)
	raw, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("kube: report: %w", err)
	}
	if len(raw) > maxReport {
		return fmt.Errorf("kube: report of %d documents is %d bytes, over the %d a ConfigMap can hold", len(rep.Documents), len(raw), maxReport)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: r.name, Namespace: r.opts.Namespace, OwnerReferences: owner,
			Labels: map[string]string{ReportLabel: reportValue, "app.kubernetes.io/part-of": "portcullis"}},
		Data: map[string]string{reportKey: string(raw)},
	}
	cms := r.opts.Client.CoreV1().ConfigMaps(r.opts.Namespace)
	cur, err := cms.Get(ctx, r.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: "portcullis"})
	case err == nil:
		cm.ResourceVersion = cur.ResourceVersion
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "portcullis"})
	}
	if err != nil {
		return fmt.Errorf("kube: report: %w", err)
	}
	return nil
}

// remove deletes the report when the replica stops.
func (r *Reporter) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := r.opts.Client.CoreV1().ConfigMaps(r.opts.Namespace).Delete(ctx, r.name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		r.log.Warn("deleting this replica's proxy counts", "configmap", r.opts.Namespace+"/"+r.name, "err", err)
	}
}

// liveReports returns the reports of the replicas that are there: written within stale, and
// owned by a pod that still exists (when owned by one).
func (w *StatusWriter) liveReports(ctx context.Context) ([]*Report, error) {
	list, err := w.opts.Client.CoreV1().ConfigMaps(w.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{ReportLabel: reportValue}.String(), ResourceVersion: "0", // from the watch cache
	})
	if err != nil {
		return nil, fmt.Errorf("kube: reports: %w", err)
	}
	var out []*Report
	for _, cm := range list.Items {
		rep := &Report{}
		if err := json.Unmarshal([]byte(cm.Data[reportKey]), rep); err != nil {
			w.log.Warn("ignoring a replica's proxy counts that do not decode", "configmap", cm.Namespace+"/"+cm.Name, "err", err)
			continue
		}
		if age := w.now().Sub(rep.Updated); age > w.opts.Stale {
			w.log.Debug("ignoring a stale replica report", "configmap", cm.Namespace+"/"+cm.Name, "age", age)
			continue
		}
		if !w.podExists(cm.Namespace, cm.OwnerReferences) {
			w.log.Debug("ignoring the report of a replica that is gone", "configmap", cm.Namespace+"/"+cm.Name)
			continue
		}
		out = append(out, rep)
	}
	return out, nil
}

// podExists reports whether the pod owning a report (if a pod owns it) is still there.
func (w *StatusWriter) podExists(namespace string, owners []metav1.OwnerReference) bool {
	for _, o := range owners {
		if o.Kind != "Pod" || o.APIVersion != "v1" {
			continue
		}
		pod, err := w.opts.Source.lis.pods.Pods(namespace).Get(o.Name)
		if err != nil || pod.UID != o.UID {
			return false
		}
	}
	return true
}
