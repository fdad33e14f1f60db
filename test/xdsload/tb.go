package main

import "fmt"

// tb lets the test CA (written for tests) mint certificates in this program: the first failure
// is kept as an error instead of failing a test.
type tb struct{ err error }

func (t *tb) Helper() {}

func (t *tb) Fatalf(format string, args ...any) {
	if t.err == nil {
		t.err = fmt.Errorf(format, args...)
	}
}
