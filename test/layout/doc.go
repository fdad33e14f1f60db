// Package layout holds the test that keeps docs/architecture.md's package table true: every
// package of the project imports only the project packages its row allows.
package layout
