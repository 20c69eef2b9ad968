package window

import (
	"fmt"
	"time"
)

// Horizon bounds the search for the next change of state: At looks at most
// this far past t. A state that does not change within it has a zero Until.
const Horizon = 366 * 24 * time.Hour

// State is whether deploys are open at an instant, and until when.
type State struct {
	// Open reports whether a deploy may run.
	Open bool
	// Reason says why deploys are closed; empty when Open. Either
	// `inside deny window "0 18 * * 5" (62h, Europe/Berlin) until <Until>`
	// (the first active deny window in spec order, Until in its time zone
	// as RFC 3339; " until …" is left out when Until is zero) or
	// "outside every allow window".
	Reason string
	// Until is the first instant after t at which Open flips: for a closed
	// state the exact instant deploys open, for an open state the exact
	// instant they close. It is zero if Open does not change within Horizon.
	// It is in t's location.
	Until time.Time
}

// At returns the state at t. A nil or empty set is always open with a zero
// Until. At is pure: the same t gives the same State.
func (s *Set) At(t time.Time) State {
	if s == nil || len(s.windows) == 0 {
		return State{Open: true}
	}
	limit := t.Add(Horizon)
	cursors := make([]cursor, len(s.windows))
	for i := range s.windows {
		cursors[i] = newCursor(&s.windows[i], t, limit)
	}
	st := State{Open: s.open(cursors, t)}
	deny := s.firstDeny(cursors, t) // before the sweep moves the cursors
	st.Until = s.nextFlip(cursors, t, limit, st.Open)
	if !st.Open {
		st.Reason = s.reason(deny, st.Until)
	}
	return st
}

// open evaluates the rule at c, with every cursor on the run that ends
// after c: no deny active, and some allow active if there are allows.
func (s *Set) open(cursors []cursor, c time.Time) bool {
	allowed := s.allows == 0
	for i := range cursors {
		if !cursors[i].activeAt(c) {
			continue
		}
		if s.windows[i].deny {
			return false
		}
		allowed = true
	}
	return allowed
}

// nextFlip sweeps the run boundaries of all windows in time order from t
// and returns the first boundary at which open differs from was, or zero if
// there is none up to limit. Open can only change at a boundary, because
// every window's activity is constant between its own run starts and ends.
func (s *Set) nextFlip(cursors []cursor, t, limit time.Time, was bool) time.Time {
	c := t
	for {
		var ev time.Time
		for i := range cursors {
			if b, ok := cursors[i].nextBoundary(c); ok && (ev.IsZero() || b.Before(ev)) {
				ev = b
			}
		}
		if ev.IsZero() || ev.After(limit) {
			return time.Time{}
		}
		c = ev
		for i := range cursors {
			cursors[i].advance(c)
		}
		if s.open(cursors, c) != was {
			return c.In(t.Location())
		}
	}
}

// firstDeny returns the index of the first deny window active at t, with
// the cursors placed at t, or -1.
func (s *Set) firstDeny(cursors []cursor, t time.Time) int {
	for i := range cursors {
		if s.windows[i].deny && cursors[i].activeAt(t) {
			return i
		}
	}
	return -1
}

// reason explains a closed state: the deny window at index deny (-1: none
// is active, so no allow window is) and the instant deploys open.
func (s *Set) reason(deny int, until time.Time) string {
	if deny < 0 {
		return "outside every allow window"
	}
	w := &s.windows[deny]
	r := fmt.Sprintf("inside deny window %q (%s, %s)", w.spec.Schedule, w.spec.Duration, w.spec.Timezone)
	if !until.IsZero() {
		r += " until " + until.In(w.loc).Format(time.RFC3339)
	}
	return r
}

// cursor walks one window's runs in time order. A run is a maximal interval
// [start, end) covered by the window: activations whose intervals overlap or
// touch (the next activation at or before the current end) are merged.
type cursor struct {
	w     *window
	limit time.Time // no run is extended past this; nothing after it matters
	start time.Time // current run; ok reports whether there is one
	end   time.Time
	ok    bool
	next  time.Time // first activation after the current run; zero = none
}

// newCursor places a cursor on the first run that ends after t. An
// activation a covers t when t-dur < a <= t, so the walk starts at the first
// activation after t-dur: earlier ones end at or before t. The current
// run's start is that activation, not the true start of the run, which is
// all that activeAt(t) and later boundaries need.
func newCursor(w *window, t, limit time.Time) cursor {
	c := cursor{w: w, limit: limit}
	c.next = w.after(t.Add(-w.dur), limit)
	c.load()
	return c
}

// load makes the run beginning at c.next current, merging activations
// until the run ends before the following activation or passes limit.
func (c *cursor) load() {
	if c.next.IsZero() {
		c.ok = false
		return
	}
	c.start, c.ok = c.next, true
	a := c.next
	c.end = a.Add(c.w.dur)
	for {
		n := c.w.after(a, c.limit)
		if n.IsZero() || n.After(c.end) || c.end.After(c.limit) {
			c.next = n
			return
		}
		a, c.end = n, n.Add(c.w.dur)
	}
}

// activeAt reports whether the current run covers x.
func (c *cursor) activeAt(x time.Time) bool {
	return c.ok && !c.start.After(x) && x.Before(c.end)
}

// nextBoundary returns the first start or end of the current run after x.
func (c *cursor) nextBoundary(x time.Time) (time.Time, bool) {
	switch {
	case !c.ok:
		return time.Time{}, false
	case c.start.After(x):
		return c.start, true
	default:
		return c.end, true
	}
}

// advance moves to the first run that ends after x.
func (c *cursor) advance(x time.Time) {
	for c.ok && !c.end.After(x) {
		c.load()
	}
}

// after returns the window's first activation strictly after x, or zero if
// there is none up to limit. robfig's Next gives up five years past its
// argument, so a rare schedule (29 February) is searched in four-year
// steps; a result that does not move forward (a DST corner) is skipped.
func (w *window) after(x, limit time.Time) time.Time {
	from := x
	for !from.After(limit) {
		n := w.sched.Next(from)
		switch {
		case n.IsZero():
			from = from.AddDate(4, 0, 0)
		case !n.After(x):
			from = from.Add(time.Second)
		default:
			return n
		}
	}
	return time.Time{}
}
