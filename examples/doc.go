// Package examples holds the demo's mesh documents (demo/mesh) and, embedded, gives them to
// `portcullis demo` so the binary runs the demo from anywhere.
package examples

import "embed"

// DemoMesh holds demo/mesh/*.yaml.
//
//go:embed demo/mesh/*.yaml
var DemoMesh embed.FS
