// Package lint finds what validation cannot: AuthorizationPolicy rules that can never match
// (methods all excluded by notMethods, contradictory conditions, ports the service does not
// have, a from.jwt or from.apiKey where no provider verifies the credential, ...), beside the
// compile errors of their Rego modules. Every check is sound: it reports only what no request can satisfy. It is
// `portcullis policy lint`, which also prints the mesh's Mesh.ReachWarnings.
package lint
