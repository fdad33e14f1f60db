// Package explain explains a decision for people: every policy of the mesh, whether it applies
// to the request's destination, what it did (decided, overridden, audited, dry run, no match),
// and for each rule that did not match, which part failed and why. It renders the engine's
// Trace as text (`portcullis policy explain`, failed policy tests) or JSON (-o json).
package explain
