package watch

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestValueWakesWaitersOnStore(t *testing.T) {
	var v Value[int]
	x, changed := v.Current()
	if x != 0 {
		t.Fatalf("zero Value holds %d", x)
	}
	select {
	case <-changed:
		t.Fatal("channel closed before any change")
	default:
	}
	v.Store(7)
	select {
	case <-changed:
	default:
		t.Fatal("Store did not close the channel handed out before it")
	}
	if got, _ := v.Current(); got != 7 {
		t.Fatalf("Current = %d after Store(7)", got)
	}
}

func TestUpdateNotifiesOnlyOnChange(t *testing.T) {
	var v Value[string]
	v.Store("a")
	changed := v.Changed()
	if v.Update(func(s string) (string, bool) { return s, false }) {
		t.Fatal("Update reported a change it did not make")
	}
	select {
	case <-changed:
		t.Fatal("an Update that changed nothing woke waiters")
	default:
	}
	if !v.Update(func(s string) (string, bool) { return s + "b", true }) {
		t.Fatal("Update did not report its change")
	}
	<-changed
	if got := v.Load(); got != "ab" {
		t.Fatalf("Load = %q, want ab", got)
	}
}

func TestWaitReturnsFirstMatchingValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var v Value[int]
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 1; i <= 5; i++ {
				time.Sleep(time.Second)
				v.Store(i)
			}
		}()
		got, err := v.Wait(t.Context(), func(x int) bool { return x >= 3 })
		if err != nil || got != 3 {
			t.Fatalf("Wait = %d, %v; want 3", got, err)
		}
		<-done
	})
}

func TestWaitEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var v Value[int]
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := v.Wait(ctx, func(x int) bool { return x > 0 })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait on a value that never matches = %v, want the context's deadline", err)
		}
	})
}

func TestSignal(t *testing.T) {
	var s Signal
	a := s.Changed()
	if b := s.Changed(); a != b {
		t.Fatal("two Changed calls without a Notify gave different channels")
	}
	s.Notify()
	<-a
	if c := s.Changed(); c == a {
		t.Fatal("Changed after Notify returned the closed channel")
	}
	s.Notify() // with nobody waiting: harmless
}
