package kube

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// rebuild recomputes the endpoints and, when the documents changed, the mesh.
func (s *Source) rebuild() {
	ctx := context.Background()
	now := time.Now()
	docs, objects, decodeProblems := s.customResources()
	view := s.view()
	derived, backed := s.meshServices(view, docs)
	docs = append(docs, derived...)
	sortDocs(docs)
	s.publishEndpoints(s.meshEndpoints(view, backed))

	fp, err := fingerprint(docs, decodeProblems)
	s.mu.Lock()
	unchanged := err == nil && fp == s.lastDocs
	s.status.LastAttempt = now
	s.mu.Unlock()
	if unchanged {
		s.count(ctx, "unchanged")
		return
	}
	var mesh *model.Mesh
	problems := decodeProblems
	if len(problems) == 0 {
		mesh, problems = source.Build(docs, s.opts.Checks...)
	} else {
		problems = append(problems, model.CheckDocuments(docs)...)
	}
	s.record(ctx, now, fp, docs, objects, mesh, problems)
}

func (s *Source) record(ctx context.Context, now time.Time, fp string, docs []model.Document, objects map[objectKey]int64, mesh *model.Mesh, problems model.Problems) {
	byObject := map[objectKey][]string{}
	for _, p := range problems {
		k := problemKey(p)
		msg := p.Message
		if p.Field != "" {
			msg = p.Field + ": " + msg
		}
		byObject[k] = append(byObject[k], msg)
	}
	warnings := map[objectKey][]string{}
	if mesh != nil {
		for _, w := range mesh.ReachWarnings() {
			warnings[problemKey(w)] = append(warnings[problemKey(w)], "warning: "+w.Field+": "+w.Message)
		}
	}
	s.mu.Lock()
	s.lastDocs = fp
	s.status.Documents = len(docs)
	s.status.Services = 0
	for _, d := range docs {
		if d.Object.GetKind() == model.KindService {
			s.status.Services++
		}
	}
	s.status.Problems = problems
	for k := range s.objects {
		if _, ok := objects[k]; !ok {
			delete(s.objects, k)
		}
	}
	for k, gen := range objects {
		st := s.objects[k]
		if st == nil {
			st = &objectState{}
			s.objects[k] = st
		}
		st.generation, st.problems, st.warnings = gen, byObject[k], warnings[k]
		if mesh != nil {
			st.live = gen
		}
	}
	published := false
	if mesh != nil {
		published = s.Publish(mesh)
		if published {
			s.status.Version, s.status.LoadedAt = mesh.Version, now
		}
	}
	live := s.status.Version
	s.mu.Unlock()
	s.docsChanged.Notify()
	switch {
	case mesh == nil:
		s.count(ctx, "invalid")
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.String()
		}
		s.log.Error("mesh resources invalid; keeping the last good mesh", "live_version", live, "problems", len(problems), "errors", msgs)
	case published:
		s.count(ctx, "ok")
		s.log.Info("mesh loaded from kubernetes", "version", mesh.Version, "documents", len(docs), "services", len(mesh.Services))
		source.Warn(s.log, mesh)
	default:
		s.count(ctx, "unchanged")
	}
}

// problemKey finds the custom resource a problem is about from its kind and name.
func problemKey(p model.Problem) objectKey {
	ns, name, ok := strings.Cut(p.Name, "/")
	if !ok {
		ns, name = "", p.Name
	}
	return objectKey{Kind: p.Kind, Namespace: ns, Name: name}
}

// fingerprint identifies a document set, so an event that changes no document (a pod restart
// with the same service account) builds nothing.
func fingerprint(docs []model.Document, problems model.Problems) (string, error) {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, d := range docs {
		if err := enc.Encode(d.Object); err != nil {
			return "", err
		}
	}
	if err := enc.Encode(problems); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// customResources decodes every portcullis.dev resource into its model document. A resource
// that does not decode (the API server validated its schema, so this is rare: an older CRD) is
// a problem like an invalid field.
func (s *Source) customResources() ([]model.Document, map[objectKey]int64, model.Problems) {
	var docs []model.Document
	var problems model.Problems
	objects := map[objectKey]int64{}
	for _, kind := range model.Kinds {
		list, err := s.crs[kind].List(labels.Everything())
		if err != nil {
			problems = append(problems, model.Problem{File: v1alpha1.Resource(kind), Message: err.Error()})
			continue
		}
		for _, o := range list {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			key := objectKey{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
			objects[key] = u.GetGeneration()
			origin := model.Origin{File: resourcePath(kind, u.GetNamespace(), u.GetName())}
			obj, err := decode(kind, u)
			if err != nil {
				problems = append(problems, model.Problem{File: origin.File, Kind: kind, Name: model.Ref{Namespace: u.GetNamespace(), Name: u.GetName()}.String(), Message: err.Error()})
				continue
			}
			docs = append(docs, model.Document{Origin: origin, Object: obj})
		}
	}
	sortDocs(docs)
	return docs, objects, problems
}

// resourcePath names a resource in problems: "authorizationpolicies/demo/allow-frontend".
func resourcePath(kind, namespace, name string) string {
	if namespace == "" {
		return v1alpha1.Resource(kind) + "/" + name
	}
	return v1alpha1.Resource(kind) + "/" + namespace + "/" + name
}

// decode turns a custom resource into a model document: the same JSON, metadata reduced to the
// document's name, namespace and labels.
func decode(kind string, u *unstructured.Unstructured) (model.Object, error) {
	obj := model.NewObject(kind)
	raw, err := json.Marshal(map[string]any{
		"apiVersion": model.APIVersion,
		"kind":       kind,
		"metadata":   model.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace(), Labels: u.GetLabels()},
		"spec":       u.Object["spec"],
	})
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	if err := json.Unmarshal(raw, obj); err != nil {
		return nil, fmt.Errorf("spec does not decode: %v", err)
	}
	return obj, nil
}

func sortDocs(docs []model.Document) {
	slices.SortFunc(docs, func(a, b model.Document) int {
		ra, rb := model.RefOf(a.Object), model.RefOf(b.Object)
		return cmp.Or(cmp.Compare(a.Object.GetKind(), b.Object.GetKind()), cmp.Compare(ra.Namespace, rb.Namespace), cmp.Compare(ra.Name, rb.Name))
	})
}
