// Package source turns mesh documents into a validated model.Mesh and keeps it current.
//
// Decode parses YAML strictly (unknown fields, wrong types and YAML aliases are errors, each
// reported with its field path and line). Dir loads a directory of *.yaml/*.yml files, watches it,
// and publishes a new mesh only when the whole set is valid: an invalid edit is logged and kept
// in Status while the last good mesh stays live. Consumers read the current mesh through the
// Source interface and wait on its change channel.
package source
