package window

import (
	"fmt"
	"time"
)

// Horizon bounds the search for the next change of state: At looks at most
// this far past t. A state that does not change within it has a zero Until.
const Horizon = 366 * 24 * time.Hour

// MaxSteps bounds the work of one At call, in cron schedule evaluations.
// Only windows that chain many activations hit it (a schedule firing every
// minute with a duration of a minute or more, over months); At then
// reports a zero Until rather than an uncertain one. Open is always exact.
const MaxSteps = 10000

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
	// instant they close. It is zero if Open does not change within
	// Horizon, or not before At stopped at MaxSteps. It is in t's location.
	Until time.Time
}

// At returns the state at t. A nil or empty set is always open with a zero
// Until. At is pure: the same instant gives the same State, whatever t's
// location or monotonic reading (it is dropped: windows are wall-clock).
func (s *Set) At(t time.Time) State {
	if s == nil || len(s.windows) == 0 {
		return State{Open: true}
	}
	t = t.Round(0)
	limit := t.Add(Horizon)
	b := &budget{left: MaxSteps}
	cursors := make([]cursor, len(s.windows))
	for i := range s.windows {
		cursors[i] = newCursor(&s.windows[i], t, limit, b)
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
// there is none up to limit or the budget ran out first. Open can only
// change at a boundary, because every window's activity is constant between
// its own run starts and ends.
func (s *Set) nextFlip(cursors []cursor, t, limit time.Time, was bool) time.Time {
	c := t
	for {
		var ev time.Time
		known, cut := limit, false // nothing is known from a cut run's end on
		for i := range cursors {
			cur := &cursors[i]
			if b, ok := cur.nextBoundary(c); ok && (ev.IsZero() || b.Before(ev)) {
				ev = b
			}
			if cur.cut && cur.end.Before(known) {
				known, cut = cur.end, true
			}
		}
		if ev.IsZero() || ev.After(limit) || (cut && !ev.Before(known)) {
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

// budget counts the schedule evaluations one At call may still make.
type budget struct{ left int }

// cursor walks one window's activations in time order; the current run is
// the interval [start, end) of one activation. When the budget runs out
// while the following activation is looked up, the cursor is cut: the state
// up to end is known, nothing from end on is.
type cursor struct {
	w     *window
	b     *budget
	limit time.Time // no run is extended past this; nothing after it matters
	start time.Time // current run; ok reports whether there is one
	end   time.Time
	ok    bool
	cut   bool
	next  time.Time // first activation after the current run; zero = none
}

// newCursor places a cursor on the first activation whose interval ends
// after t. An activation a covers t when t-dur < a <= t; if there is one,
// the cursor starts at the last such activation (found by bisection, not by
// walking every activation since t-dur, which can be many for a long
// duration), else at the first activation after t. Placing costs at most a
// few hundred evaluations (about 2·log2 of the duration in seconds, plus
// one per four years of it) and is not charged to b, so Open is exact
// however the shared budget is spent; stepping on is charged.
func newCursor(w *window, t, limit time.Time, b *budget) cursor {
	c := cursor{w: w, b: &budget{left: MaxSteps}, limit: limit}
	first, ok := c.after(t.Add(-w.dur), limit)
	if ok && !first.IsZero() && !first.After(t) {
		first, ok = c.lastUpTo(t.Add(-w.dur), t)
	}
	if !ok { // not reached: placing is far below MaxSteps
		c.ok, c.cut, c.start, c.end = true, true, t, t
		return c
	}
	c.b, c.next = b, first
	c.load()
	return c
}

// lastUpTo returns the last activation in (lo, x], given that there is one:
// it gallops back from x, then bisects to one-second precision. Activations
// fall on whole seconds, so the first activation after a y whose successor
// second has none up to x is the last one.
func (c *cursor) lastUpTo(lo, x time.Time) (time.Time, bool) {
	good, bad := lo, x // after(good) <= x < after(bad)
	for step := time.Second; step > 0 && step < x.Sub(good); step *= 2 {
		y := x.Add(-step)
		n, ok := c.after(y, x)
		if !ok {
			return time.Time{}, false
		}
		if !n.IsZero() && !n.After(x) {
			good = y
			break
		}
		bad = y
	}
	for bad.Sub(good) > time.Second {
		mid := good.Add(bad.Sub(good) / 2)
		n, ok := c.after(mid, x)
		if !ok {
			return time.Time{}, false
		}
		if !n.IsZero() && !n.After(x) {
			good = mid
		} else {
			bad = mid
		}
	}
	return c.after(good, x)
}

// load makes the activation at c.next the current run and looks up the
// one after it. Runs are single activations: overlapping or touching ones
// need no merging, because the sweep re-evaluates every window at each
// boundary, and stepping one activation per boundary spends the shared
// budget in time order across all windows.
func (c *cursor) load() {
	if c.next.IsZero() {
		c.ok = false
		return
	}
	c.start, c.end, c.ok = c.next, c.next.Add(c.w.dur), true
	if c.end.After(c.limit) {
		c.next = time.Time{} // what follows does not matter
		return
	}
	n, ok := c.after(c.start, c.limit)
	if !ok {
		c.cut, c.next = true, time.Time{}
		return
	}
	c.next = n
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
	for c.ok && !c.cut && !c.end.After(x) {
		c.load()
	}
}

// after returns the window's first activation strictly after x, or zero if
// there is none up to limit; ok is false when the budget ran out. robfig's
// Next gives up five years past its argument, so a rare schedule (29
// February) is searched in four-year steps; a result that does not move
// forward (a DST corner) is skipped.
func (c *cursor) after(x, limit time.Time) (time.Time, bool) {
	from := x
	for !from.After(limit) {
		if c.b.left <= 0 {
			return time.Time{}, false
		}
		c.b.left--
		n := c.w.sched.Next(from)
		switch {
		case n.IsZero():
			from = from.AddDate(4, 0, 0)
		case !n.After(x):
			from = from.Add(time.Second)
		default:
			return n, true
		}
	}
	return time.Time{}, true
}
