// Package model is the mesh's intermediate representation: the document kinds users write
// (Mesh, Service, Workload, JWTProvider, AuthorizationPolicy, RateLimitPolicy,
// CredentialRevocation) as Go types, their
// validation, and the validated, source-independent Mesh that translators and the authorization
// engine read.
//
// The package knows nothing of files, Kubernetes or Envoy: sources (xds/source) decode documents
// into these types and call Build; consumers read the resulting *Mesh, which is immutable once
// built. For translation, NewMeshContext resolves what every proxy of a mesh shares (services
// with their identities and rate limits) and NewProxy resolves one proxy against it, so the
// translator only reads. Every problem found is reported at once, each naming the document and field path it
// concerns, so a user can fix a whole file in one pass.
package model
