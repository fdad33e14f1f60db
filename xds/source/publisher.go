package source

import (
	"github.com/portcullis/portcullis/telemetry/watch"
	"github.com/portcullis/portcullis/xds/model"
)

// Source is what consumers of the mesh depend on: the current mesh (nil until the first valid
// one) and a channel that is closed when a newer one replaces it.
type Source = watch.Source[*model.Mesh]

// Publisher holds the current mesh and wakes waiters when it changes. Sources embed it; a newer
// mesh with the same version as the current one is not published, so consumers never do work for
// a change that changes nothing.
type Publisher struct {
	mesh watch.Value[*model.Mesh]
}

// Current returns the current mesh and a channel closed when it is replaced.
func (p *Publisher) Current() (*model.Mesh, <-chan struct{}) { return p.mesh.Current() }

// Publish makes m current and reports whether it differed from the previous mesh.
func (p *Publisher) Publish(m *model.Mesh) bool {
	return p.mesh.Update(func(cur *model.Mesh) (*model.Mesh, bool) {
		return m, cur == nil || cur.Version != m.Version
	})
}
