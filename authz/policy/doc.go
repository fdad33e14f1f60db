// Package policy compiles the AuthorizationPolicy documents of a mesh into an immutable Engine
// and decides requests with it.
//
// Compile runs once per mesh version: it turns every rule into typed matchers (principal
// patterns, method sets, path globs, CIDRs, time windows, claim and attribute tests, regular
// expressions) and every Rego module into a prepared query, so Decide does no parsing and no
// compilation. Decide reads typed Attributes (no map[string]any); the Rego input document is built
// from them only when a Rego policy applies to the request.
//
// Semantics (docs/policies.md has them with examples):
//
//   - the policies that apply to a request are those whose selector names the destination
//     service, those without a selector in the destination's namespace, and those without a
//     selector in the root namespace (Mesh.spec.rootNamespace), which are mesh-wide; no other
//     namespace's policy applies;
//   - a policy matches when any of its rules matches or its Rego module's `match` is true; a rule
//     matches when every part it gives matches (from AND to AND each when); within a list, any
//     entry may match, and a not-list matches when no entry does;
//   - DENY overrides ALLOW: if an enforced DENY policy matches, the request is denied; otherwise
//     if an enforced ALLOW policy matches, it is allowed; otherwise Mesh.spec.defaultDecision
//     (DENY unless set) applies;
//   - AUDIT policies and dry-run policies of any action are evaluated, logged and traced, but
//     never change the decision; the decision records what dry-run policies would have decided;
//   - an attribute may be a list (a JSON array claim, a repeated query parameter, a header sent
//     more than once): a test matches when any element does; a claim path that names two claims
//     is absent;
//   - a Rego module that fails to evaluate, or runs out of the decision's budget (budget.go),
//     fails closed: a DENY policy matches, an ALLOW policy does not;
//   - from.jwt without providers is met by a token of a provider of the destination's namespace
//     or of the root namespace, never of another namespace; named providers are found in the
//     policy's namespace, else in the root namespace;
//   - when a request without a token is denied by default, an ALLOW rule would have matched it
//     given a verified JWT, and a provider verifies tokens for the destination, the decision's
//     code is CodeJWTRequired (the server answers 401).
//
// Beside Decide the engine offers what the authoring tools need and nothing more: Check and
// CheckDocuments (compile errors at file, document, field and Rego line; Compiler.Check is a
// source.Checker) and Trace (every rule of every policy evaluated, with the part that failed
// and why). The tools themselves live apart: authz/policy/lint (rules that can never match),
// authz/policy/explain (a decision explained policy by policy) and authz/policy/policytest (the
// YAML test runner behind `portcullis policy test`). The matchers rules compile to are in
// authz/policy/internal/pattern, shared with the linter.
package policy
