// Package lint finds what validation cannot: AuthorizationPolicy rules that can never match
// (methods all excluded by notMethods, contradictory conditions, ports the service does not
// have, ...), beside the compile errors of their Rego modules. Every check is sound: it reports
// only what no request can satisfy. It is `portcullis policy lint`.
package lint
