//go:build !linux

package demo

import "context"

// watchParent needs /proc to see the parent's signal handlers; elsewhere the demo stops on its
// own signals only.
func watchParent(context.Context, func(string)) {}
