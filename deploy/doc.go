// Package deploy holds the Kubernetes manifests of Portcullis — a kustomize base (namespace,
// CRDs generated from the document types, least-privilege RBAC, the control plane Deployment with
// its PodDisruptionBudget and Services, the injection webhook, Jaeger, Redis for Global rate
// limits) and overlays — embedded, with what `portcullis install` needs to render and apply
// them: Render (kustomizations that only list resources), Objects and Apply (server-side apply,
// optionally dry-run).
package deploy
