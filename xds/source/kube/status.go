package kube

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// Progress reports how many connected proxies run a mesh version with every resource ACKed,
// and how many proxies are connected.
type Progress func(meshVersion string) (programmed, total int)

// StatusWriterOptions configure a StatusWriter.
type StatusWriterOptions struct {
	Dynamic  dynamic.Interface
	Source   *Source
	Progress Progress
	Logger   *slog.Logger
	// Interval between passes. 2s unless set.
	Interval time.Duration
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
	if opts.Progress == nil {
		opts.Progress = func(string) (int, int) { return 0, 0 }
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
	programmed, total := 0, 0
	if live != "" {
		programmed, total = w.opts.Progress(live)
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
			conds := conditions(st, live, global, programmed, total)
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

func conditions(st objectState, live string, global []string, programmed, total int) []metav1.Condition {
	accepted := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: "valid"}
	if len(st.problems) > 0 {
		accepted.Status, accepted.Reason = metav1.ConditionFalse, ReasonInvalid
		accepted.Message = truncate(strings.Join(st.problems, "; "))
	}
	prog := metav1.Condition{Type: v1alpha1.ConditionProgrammed}
	switch {
	case st.live != st.generation || live == "":
		prog.Status, prog.Reason = metav1.ConditionFalse, ReasonNotLive
		why := "other resources are invalid (see their Accepted conditions)"
		if len(st.problems) > 0 {
			why = "this resource is invalid"
		} else if len(global) > 0 {
			why = strings.Join(global, "; ")
		}
		prog.Message = truncate("not in the live mesh: " + why + "; the last good mesh stays live")
	case programmed < total:
		prog.Status, prog.Reason = metav1.ConditionFalse, ReasonPending
		prog.Message = fmt.Sprintf("programmed on %d of %d proxies", programmed, total)
	default:
		prog.Status, prog.Reason = metav1.ConditionTrue, ReasonProgrammed
		prog.Message = fmt.Sprintf("programmed on %d of %d proxies", programmed, total)
	}
	accepted.ObservedGeneration, prog.ObservedGeneration = st.generation, st.generation
	return []metav1.Condition{accepted, prog}
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
