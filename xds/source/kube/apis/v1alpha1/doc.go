// Package v1alpha1 holds the Kubernetes custom resource types of the portcullis.dev/v1alpha1
// API: thin wrappers that give each mesh document kind of package model the object shape
// controller-gen needs (metav1.TypeMeta, metav1.ObjectMeta, a status subresource). The specs
// are model's own types, so files and CRDs share one schema and cannot drift; `make generate`
// writes the CRDs in deploy/base/crds from these types, and a test fails when they are stale.
//
// The Kubernetes source reads these resources as unstructured objects and decodes them into
// model documents, so the package needs no scheme registration and no generated deep copies.
//
// +groupName=portcullis.dev
// +versionName=v1alpha1
package v1alpha1
