package forge

import (
	"sync"
	"time"
)

// Limiter allows at most one plan per key (a pull request, Key) per
// interval, and coalesces the events that come sooner into one re-run.
// It is safe for concurrent use.
type Limiter struct {
	interval time.Duration
	maxKeys  int
	mu       sync.Mutex
	keys     map[string]*limit
}

type limit struct {
	last    time.Time // when the last allowed plan started
	pending bool      // a re-run was handed out and has not come back
}

// NewLimiter returns a Limiter of one plan per interval per key,
// remembering at most maxKeys keys (at least 1): beyond, the least
// recently planned key is forgotten (its next event is allowed at once).
func NewLimiter(interval time.Duration, maxKeys int) *Limiter {
	return &Limiter{interval: interval, maxKeys: max(maxKeys, 1), keys: map[string]*limit{}}
}

// Allow reports whether a plan for key may run at now. When it may not,
// the first refused call since the last allowed one gets retryAt, the
// time it may: the caller then runs again at retryAt with the pull
// request's latest head. Later refused calls get a zero retryAt: that
// re-run is already due, and will see their head. A call at or after
// retryAt is allowed.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e == nil {
		l.evict()
		l.keys[key] = &limit{last: now}
		return true, time.Time{}
	}
	next := e.last.Add(l.interval)
	if !now.Before(next) {
		e.last, e.pending = now, false
		return true, time.Time{}
	}
	if e.pending {
		return false, time.Time{}
	}
	e.pending = true
	return false, next
}

// evict makes room for one key by dropping the least recently planned
// key when the Limiter is full.
func (l *Limiter) evict() {
	if len(l.keys) < l.maxKeys {
		return
	}
	var oldest string
	var oldestAt time.Time
	for k, e := range l.keys {
		if oldest == "" || e.last.Before(oldestAt) {
			oldest, oldestAt = k, e.last
		}
	}
	delete(l.keys, oldest)
}
