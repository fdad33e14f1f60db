package watch

import (
	"context"
	"sync"
)

// Source is anything with a current value and a change signal. Consumers depend on it rather
// than on a concrete holder.
type Source[T any] interface {
	// Current returns the value and a channel closed when it is replaced. Take the channel
	// before acting on the value, so a change in between is never missed.
	Current() (T, <-chan struct{})
}

// Signal is a change notification on its own, for holders that compute their value on demand
// (a registry that sorts on read): Notify closes the channel Changed handed out.
// The zero Signal is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Changed returns a channel closed at the next Notify.
func (s *Signal) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changedLocked()
}

func (s *Signal) changedLocked() chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes everyone waiting on a channel from Changed.
func (s *Signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifyLocked()
}

func (s *Signal) notifyLocked() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// Value is a watchable value. The zero Value holds T's zero value and is ready to use; it must
// not be copied after first use.
type Value[T any] struct {
	sig Signal
	v   T
}

// Current returns the value and a channel closed when it is replaced.
func (v *Value[T]) Current() (T, <-chan struct{}) {
	v.sig.mu.Lock()
	defer v.sig.mu.Unlock()
	return v.v, v.sig.changedLocked()
}

// Load returns the value.
func (v *Value[T]) Load() T {
	v.sig.mu.Lock()
	defer v.sig.mu.Unlock()
	return v.v
}

// Store replaces the value and wakes waiters.
func (v *Value[T]) Store(x T) {
	v.sig.mu.Lock()
	defer v.sig.mu.Unlock()
	v.v = x
	v.sig.notifyLocked()
}

// Update replaces the value with next(current) when next reports a change, atomically, and
// wakes waiters only then; it reports whether it changed the value.
func (v *Value[T]) Update(next func(T) (T, bool)) bool {
	v.sig.mu.Lock()
	defer v.sig.mu.Unlock()
	x, changed := next(v.v)
	if !changed {
		return false
	}
	v.v = x
	v.sig.notifyLocked()
	return true
}

// Changed returns a channel closed when the value is next replaced.
func (v *Value[T]) Changed() <-chan struct{} { return v.sig.Changed() }

// Wait returns the first value (the current one included) for which ok is true, or ctx's error.
func (v *Value[T]) Wait(ctx context.Context, ok func(T) bool) (T, error) { return Wait(ctx, v, ok) }

// Wait returns the first value of s (the current one included) for which ok is true, or ctx's
// error when it ends first.
func Wait[T any](ctx context.Context, s Source[T], ok func(T) bool) (T, error) {
	for {
		x, changed := s.Current()
		if ok(x) {
			return x, nil
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		case <-changed:
		}
	}
}

// Compile-time check: a Value is a Source.
var _ Source[int] = (*Value[int])(nil)
