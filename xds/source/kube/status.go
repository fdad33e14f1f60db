package kube

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// StatusWriterOptions configure a StatusWriter.
type StatusWriterOptions struct {
	Dynamic dynamic.Interface
	Source  *Source
	// Client and Namespace find the replicas' reports (Reporter) that Programmed sums.
	Client    kubernetes.Interface
	Namespace string
	Logger    *slog.Logger
	// Interval between passes. 2s unless set.
	Interval time.Duration
	// Stale is the age past which a replica's report is ignored (a replica that stopped without
	// deleting it, or cannot write). 30s unless set: three of the reporters' default Refresh.
	Stale time.Duration
}

// StatusWriter writes the Accepted and Programmed conditions of every portcullis.dev resource.
// Run it on the leader only; a pass writes only the resources whose conditions changed.
type StatusWriter struct {
	opts StatusWriterOptions
	log  *slog.Logger
	now  func() time.Time
}

// Reasons of the conditions.
const (
	ReasonAccepted   = "Accepted"
	ReasonInvalid    = "Invalid"
	ReasonProgrammed = "Programmed"
	ReasonPending    = "Pending"
	ReasonRefused    = "Refused"
	ReasonNoProxies  = "NoProxies"
	ReasonNotLive    = "NotLive"
)

// NewStatusWriter returns a status writer.
func NewStatusWriter(opts StatusWriterOptions) *StatusWriter {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Stale <= 0 {
		opts.Stale = 30 * time.Second
	}
	return &StatusWriter{opts: opts, log: opts.Logger, now: time.Now}
}

// Run writes statuses until ctx ends.
func (w *StatusWriter) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		w.Sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync makes one pass over the resources.
func (w *StatusWriter) Sync(ctx context.Context) {
	s := w.opts.Source
	s.mu.Lock()
	states := make(map[objectKey]objectState, len(s.objects))
	for k, st := range s.objects {
		states[k] = *st
	}
	live := s.status.Version
	global := globalProblems(s.status.Problems)
	s.mu.Unlock()
	var reports []*Report
	counted := true
	if w.opts.Client != nil {
		var err error
		if reports, err = w.liveReports(ctx); err != nil {
			// Programmed keeps what it said (with its older observedGeneration) rather than claim
			// no replica has reported.
			counted = false
			if ctx.Err() == nil {
				w.log.Warn("reading the replicas' proxy counts; Programmed conditions wait", "err", err)
			}
		}
	}
	for _, kind := range model.Kinds {
		list, err := s.crs[kind].List(labels.Everything())
		if err != nil {
			continue
		}
		for _, o := range list {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			st, known := states[objectKey{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}]
			if !known || st.generation != u.GetGeneration() {
				continue // not seen by a rebuild yet; the next pass has it
			}
			key := objectKey{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
			conds := []metav1.Condition{accepted(st)}
			// A CredentialRevocation is applied by the authorization services and sent to no proxy:
			// Accepted (valid, in the live mesh) is all there is to say.
			if counted && kind != model.KindCredentialRevocation {
				conds = append(conds, programmed(st, live, global, sum(reports, key.String(), st.generation)))
			}
			if err := w.write(ctx, kind, u, conds); err != nil && ctx.Err() == nil {
				w.log.Warn("writing status", "resource", resourcePath(kind, u.GetNamespace(), u.GetName()), "err", err)
			}
		}
	}
}

// globalProblems are those that name no resource (no Mesh at all, a list that failed).
func globalProblems(ps model.Problems) []string {
	var out []string
	for _, p := range ps {
		if p.Kind == "" {
			out = append(out, p.String())
		}
	}
	return out
}

func accepted(st objectState) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: "valid", ObservedGeneration: st.generation}
	switch {
	case len(st.problems) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalid
		c.Message = truncate(strings.Join(st.problems, "; "))
	case len(st.warnings) > 0:
		c.Message = truncate("valid; " + strings.Join(st.warnings, "; "))
	}
	return c
}

// counts are one document's proxies over the replicas' reports.
type counts struct {
	snapshot.DocumentCount
	replicas int
	// waiting are the replicas whose live mesh has another generation of the document, or none.
	waiting []string
}

// sum adds up the replicas' counts of a document at its generation gen.
func sum(reports []*Report, doc string, gen int64) counts {
	c := counts{replicas: len(reports)}
	for _, r := range reports {
		d, ok := r.Documents[doc]
		c.Proxies += d.Proxies
		if !ok || d.Generation != gen {
			c.waiting = append(c.waiting, r.Replica) // its proxies are not programmed with gen
			continue
		}
		c.Programmed += d.Programmed
		c.Refused += d.Refused
	}
	slices.Sort(c.waiting)
	return c
}

// programmed is the Programmed condition: True when every proxy the document reaches, over all
// replicas, runs its current generation.
func programmed(st objectState, live string, global []string, c counts) metav1.Condition {
	prog := metav1.Condition{Type: v1alpha1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: ReasonPending, ObservedGeneration: st.generation}
	n := fmt.Sprintf("programmed on %d of %d proxies", c.Programmed, c.Proxies)
	switch {
	case st.live != st.generation || live == "":
		prog.Reason = ReasonNotLive
		why := "other resources are invalid (see their Accepted conditions)"
		if len(st.problems) > 0 {
			why = "this resource is invalid"
		} else if len(global) > 0 {
			why = strings.Join(global, "; ")
		}
		prog.Message = truncate("not in the live mesh: " + why + "; the last good mesh stays live")
	case c.replicas == 0:
		prog.Message = "no control-plane replica has reported its proxies yet"
	case len(c.waiting) > 0:
		prog.Message = truncate(fmt.Sprintf("%s; waiting for %s to load generation %d", n, strings.Join(c.waiting, ", "), st.generation))
	case c.Refused > 0:
		prog.Reason = ReasonRefused
		prog.Message = fmt.Sprintf("%s; %d refused it (portcullis proxy status shows why)", n, c.Refused)
	case c.Proxies == 0:
		prog.Reason, prog.Message = ReasonNoProxies, n+": no proxy uses it"
	case c.Programmed < c.Proxies:
		prog.Message = n
	default:
		prog.Status, prog.Reason, prog.Message = metav1.ConditionTrue, ReasonProgrammed, n
	}
	return prog
}

func truncate(s string) string {
	const limit = 4096 // well under the schema's 32768, and readable in kubectl
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}

// write updates the status subresource when the conditions differ from what it holds.
func (w *StatusWriter) write(ctx context.Context, kind string, u *unstructured.Unstructured, want []metav1.Condition) error {
	var cur struct {
		Status v1alpha1.Status `json:"status"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cur); err != nil {
		return err
	}
	conds := append([]metav1.Condition(nil), cur.Status.Conditions...)
	changed := cur.Status.ObservedGeneration != u.GetGeneration()
	for _, c := range want {
		old := meta.FindStatusCondition(conds, c.Type)
		if old == nil || old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message || old.ObservedGeneration != c.ObservedGeneration {
			changed = true
		}
		c.LastTransitionTime = metav1.NewTime(w.now())
		meta.SetStatusCondition(&conds, c) // keeps the transition time when the status is unchanged
	}
	if !changed {
		return nil
	}
	next := v1alpha1.Status{ObservedGeneration: u.GetGeneration(), Conditions: conds}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&next)
	if err != nil {
		return err
	}
	obj := u.DeepCopy()
	obj.Object["status"] = raw
	r := w.opts.Dynamic.Resource(schema.GroupVersionResource{Group: v1alpha1.Group, Version: v1alpha1.Version, Resource: v1alpha1.Resource(kind)})
	if ns := u.GetNamespace(); ns != "" {
		_, err = r.Namespace(ns).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: "portcullis"})
	} else {
		_, err = r.UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: "portcullis"})
	}
	return err
}
