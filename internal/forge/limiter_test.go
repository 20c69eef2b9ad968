package forge

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestLimiter_Coalesces(t *testing.T) {
	l := NewLimiter(time.Minute, 100)
	t0 := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	if ok, at := l.Allow("pr7", t0); !ok || !at.IsZero() {
		t.Fatalf("first plan: %v %v", ok, at)
	}
	// Three pushes within the minute: one re-run, at the end of it.
	ok, at := l.Allow("pr7", t0.Add(10*time.Second))
	if ok || !at.Equal(t0.Add(time.Minute)) {
		t.Fatalf("second push: %v %v, want a re-run at %v", ok, at, t0.Add(time.Minute))
	}
	for _, d := range []time.Duration{20 * time.Second, 59 * time.Second} {
		if ok, at := l.Allow("pr7", t0.Add(d)); ok || !at.IsZero() {
			t.Errorf("push at +%v: %v %v, want refused with the re-run already due", d, ok, at)
		}
	}
	// Another pull request is not held back.
	if ok, _ := l.Allow("pr8", t0.Add(time.Second)); !ok {
		t.Error("pr8 refused")
	}
	// The re-run is allowed, and starts a new interval.
	if ok, _ := l.Allow("pr7", at); !ok {
		t.Fatal("re-run at retryAt refused")
	}
	ok, at2 := l.Allow("pr7", at.Add(time.Second))
	if ok || !at2.Equal(at.Add(time.Minute)) {
		t.Errorf("push after the re-run: %v %v, want a re-run at %v", ok, at2, at.Add(time.Minute))
	}
}

func TestLimiter_BoundsKeys(t *testing.T) {
	l := NewLimiter(time.Hour, 3)
	t0 := time.Now()
	for i := range 10 {
		if ok, _ := l.Allow(fmt.Sprint("pr", i), t0.Add(time.Duration(i)*time.Second)); !ok {
			t.Fatalf("pr%d refused", i)
		}
	}
	if len(l.keys) != 3 {
		t.Errorf("%d keys kept, want 3", len(l.keys))
	}
	// The newest keys are the ones kept: pr9 is still limited.
	if ok, _ := l.Allow("pr9", t0.Add(time.Minute)); ok {
		t.Error("pr9 allowed again within its interval")
	}
}

func TestLimiter_Concurrent(t *testing.T) {
	l := NewLimiter(time.Hour, 10)
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed, reruns := 0, 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, at := l.Allow("pr", now)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				allowed++
			} else if !at.IsZero() {
				reruns++
			}
		}()
	}
	wg.Wait()
	if allowed != 1 || reruns != 1 {
		t.Errorf("%d allowed, %d re-runs handed out; want 1 and 1", allowed, reruns)
	}
}
