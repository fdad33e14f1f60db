package pattern

import (
	"fmt"
	"slices"
)

// Set is a set of strings: a slice for the few entries policies usually list, a map beyond that.
type Set struct {
	list []string
	m    map[string]struct{}
}

// NewSet returns the set of vals.
func NewSet(vals []string) Set {
	s := Set{list: vals}
	if len(vals) > 8 {
		s.m = make(map[string]struct{}, len(vals))
		for _, v := range vals {
			s.m[v] = struct{}{}
		}
	}
	return s
}

// Has reports whether v is in the set.
func (s *Set) Has(v string) bool {
	if s.m != nil {
		_, ok := s.m[v]
		return ok
	}
	return slices.Contains(s.list, v)
}

// List returns the entries in the order given; callers must not modify it.
func (s *Set) List() []string { return s.list }

func (s *Set) String() string { return fmt.Sprint(s.list) }

var _ fmt.Stringer = (*Set)(nil)
