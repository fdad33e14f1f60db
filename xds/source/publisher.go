package source

import (
	"sync"

	"github.com/portcullis/portcullis/xds/model"
)

// Source is what consumers of the mesh depend on: the current mesh (nil until the first valid
// one) and a channel that is closed when a newer one replaces it.
type Source interface {
	Current() (*model.Mesh, <-chan struct{})
}

// Publisher holds the current mesh and wakes waiters when it changes. Sources embed it; a newer
// mesh with the same version as the current one is not published, so consumers never do work for
// a change that changes nothing.
type Publisher struct {
	mu      sync.Mutex
	current *model.Mesh
	changed chan struct{}
}

// Current returns the current mesh and a channel closed when it is replaced.
func (p *Publisher) Current() (*model.Mesh, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.current, p.changed
}

// Publish makes m current and reports whether it differed from the previous mesh.
func (p *Publisher) Publish(m *model.Mesh) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current != nil && p.current.Version == m.Version {
		return false
	}
	p.current = m
	if p.changed != nil {
		close(p.changed)
	}
	p.changed = make(chan struct{})
	return true
}
