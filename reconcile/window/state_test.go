package window

import (
	"testing"
	"time"
)

var berlin = mustZone("Europe/Berlin")

func mustZone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

func mustCompile(t *testing.T, specs ...Spec) *Set {
	t.Helper()
	s, err := Compile(specs)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// at is a wall-clock instant in loc (minute precision is all the tests need).
func at(loc *time.Location, y int, mo time.Month, d, h, mi int) time.Time {
	return time.Date(y, mo, d, h, mi, 0, 0, loc)
}

// check asserts the full state at t.
type check struct {
	name   string
	t      time.Time
	open   bool
	until  time.Time // zero: Until must be zero
	reason string    // checked when not empty
}

func runChecks(t *testing.T, s *Set, checks []check) {
	t.Helper()
	for _, c := range checks {
		got := s.At(c.t)
		if got.Open != c.open {
			t.Errorf("%s: At(%s).Open = %v, want %v (%+v)", c.name, c.t, got.Open, c.open, got)
		}
		if !got.Until.Equal(c.until) {
			t.Errorf("%s: At(%s).Until = %s, want %s", c.name, c.t, got.Until, c.until)
		}
		if c.reason != "" && got.Reason != c.reason {
			t.Errorf("%s: At(%s).Reason = %q, want %q", c.name, c.t, got.Reason, c.reason)
		}
		if got.Open && got.Reason != "" {
			t.Errorf("%s: open state has a reason %q", c.name, got.Reason)
		}
		if !got.Open && got.Reason == "" {
			t.Errorf("%s: closed state has no reason", c.name)
		}
	}
}

func TestSet_At_DenyWeekend(t *testing.T) {
	s := mustCompile(t, Spec{Kind: "deny", Schedule: "0 18 * * 5", Duration: "62h", Timezone: "Europe/Berlin"})
	fri := at(berlin, 2026, 12, 4, 18, 0)
	mon := at(berlin, 2026, 12, 7, 8, 0)
	reason := `inside deny window "0 18 * * 5" (62h, Europe/Berlin) until 2026-12-07T08:00:00+01:00`
	runChecks(t, s, []check{
		{name: "thursday", t: at(berlin, 2026, 12, 3, 12, 0), open: true, until: fri},
		{name: "just before friday 18:00", t: fri.Add(-time.Nanosecond), open: true, until: fri},
		{name: "friday 18:00 exactly", t: fri, open: false, until: mon, reason: reason},
		{name: "saturday (started yesterday)", t: at(berlin, 2026, 12, 5, 12, 0), open: false, until: mon, reason: reason},
		{name: "monday just before 08:00", t: mon.Add(-time.Nanosecond), open: false, until: mon, reason: reason},
		{name: "monday 08:00 exactly", t: mon, open: true, until: at(berlin, 2026, 12, 11, 18, 0)},
	})
	// The same instant given in UTC: same answer, Until in UTC.
	got := s.At(at(berlin, 2026, 12, 5, 12, 0).UTC())
	if got.Until.Location() != time.UTC || !got.Until.Equal(mon) {
		t.Errorf("At(UTC).Until = %s, want %s in UTC", got.Until, mon.UTC())
	}
}

func TestSet_At_AllowBusinessHours(t *testing.T) {
	s := mustCompile(t, Spec{Kind: "allow", Schedule: "0 9 * * 1-5", Duration: "8h"})
	u := time.UTC
	runChecks(t, s, []check{
		{name: "monday 09:00", t: at(u, 2026, 12, 7, 9, 0), open: true, until: at(u, 2026, 12, 7, 17, 0)},
		{name: "monday 10:00", t: at(u, 2026, 12, 7, 10, 0), open: true, until: at(u, 2026, 12, 7, 17, 0)},
		{name: "monday 17:00", t: at(u, 2026, 12, 7, 17, 0), open: false, until: at(u, 2026, 12, 8, 9, 0), reason: "outside every allow window"},
		{name: "monday 08:59", t: at(u, 2026, 12, 7, 8, 59), open: false, until: at(u, 2026, 12, 7, 9, 0)},
		{name: "friday evening", t: at(u, 2026, 12, 4, 20, 0), open: false, until: at(u, 2026, 12, 7, 9, 0)},
		{name: "saturday", t: at(u, 2026, 12, 5, 12, 0), open: false, until: at(u, 2026, 12, 7, 9, 0)},
		{name: "sunday", t: at(u, 2026, 12, 6, 23, 59), open: false, until: at(u, 2026, 12, 7, 9, 0)},
	})
}

func TestSet_At_DenyInsideAllow(t *testing.T) {
	u := time.UTC
	allow := Spec{Kind: "allow", Schedule: "0 9 * * 1-5", Duration: "8h"}
	t.Run("lunch freeze", func(t *testing.T) {
		s := mustCompile(t, allow, Spec{Kind: "deny", Schedule: "0 12 * * *", Duration: "1h"})
		runChecks(t, s, []check{
			{name: "morning", t: at(u, 2026, 12, 7, 10, 0), open: true, until: at(u, 2026, 12, 7, 12, 0)},
			{name: "lunch", t: at(u, 2026, 12, 7, 12, 30), open: false, until: at(u, 2026, 12, 7, 13, 0),
				reason: `inside deny window "0 12 * * *" (1h, UTC) until 2026-12-07T13:00:00Z`},
			{name: "afternoon", t: at(u, 2026, 12, 7, 13, 0), open: true, until: at(u, 2026, 12, 7, 17, 0)},
			{name: "saturday lunch: deny and no allow", t: at(u, 2026, 12, 5, 12, 30), open: false, until: at(u, 2026, 12, 7, 9, 0)},
		})
	})
	t.Run("deny covers the allow's start", func(t *testing.T) {
		s := mustCompile(t, allow, Spec{Kind: "deny", Schedule: "30 8 * * *", Duration: "1h"})
		runChecks(t, s, []check{
			{name: "before both", t: at(u, 2026, 12, 7, 8, 0), open: false, until: at(u, 2026, 12, 7, 9, 30), reason: "outside every allow window"},
			{name: "inside deny", t: at(u, 2026, 12, 7, 9, 0), open: false, until: at(u, 2026, 12, 7, 9, 30),
				reason: `inside deny window "30 8 * * *" (1h, UTC) until 2026-12-07T09:30:00Z`},
			{name: "deny over", t: at(u, 2026, 12, 7, 9, 30), open: true, until: at(u, 2026, 12, 7, 17, 0)},
		})
	})
	t.Run("deny outlasts the allow", func(t *testing.T) {
		s := mustCompile(t, allow, Spec{Kind: "deny", Schedule: "0 16 * * *", Duration: "2h"})
		runChecks(t, s, []check{
			{name: "before deny", t: at(u, 2026, 12, 7, 15, 0), open: true, until: at(u, 2026, 12, 7, 16, 0)},
			{name: "in deny, allow ends first", t: at(u, 2026, 12, 7, 16, 30), open: false, until: at(u, 2026, 12, 8, 9, 0),
				reason: `inside deny window "0 16 * * *" (2h, UTC) until 2026-12-08T09:00:00Z`},
		})
	})
}

func TestSet_At_OverlappingAndBackToBack(t *testing.T) {
	u := time.UTC
	a := Spec{Kind: "deny", Schedule: "0 10 * * *", Duration: "3h"} // 10-13
	b := Spec{Kind: "deny", Schedule: "0 12 * * *", Duration: "3h"} // 12-15
	c := Spec{Kind: "deny", Schedule: "0 15 * * *", Duration: "1h"} // 15-16, touches b
	s := mustCompile(t, a, b, c)
	runChecks(t, s, []check{
		{name: "in a", t: at(u, 2026, 12, 7, 11, 0), open: false, until: at(u, 2026, 12, 7, 16, 0),
			reason: `inside deny window "0 10 * * *" (3h, UTC) until 2026-12-07T16:00:00Z`},
		{name: "a and b: first in spec order named", t: at(u, 2026, 12, 7, 12, 30), open: false, until: at(u, 2026, 12, 7, 16, 0),
			reason: `inside deny window "0 10 * * *" (3h, UTC) until 2026-12-07T16:00:00Z`},
		{name: "only b", t: at(u, 2026, 12, 7, 14, 0), open: false, until: at(u, 2026, 12, 7, 16, 0),
			reason: `inside deny window "0 12 * * *" (3h, UTC) until 2026-12-07T16:00:00Z`},
		{name: "c", t: at(u, 2026, 12, 7, 15, 0), open: false, until: at(u, 2026, 12, 7, 16, 0)},
		{name: "after", t: at(u, 2026, 12, 7, 16, 0), open: true, until: at(u, 2026, 12, 8, 10, 0)},
	})

	twoAllows := mustCompile(t,
		Spec{Kind: "allow", Schedule: "0 9 * * *", Duration: "4h"},
		Spec{Kind: "allow", Schedule: "0 13 * * *", Duration: "4h"})
	runChecks(t, twoAllows, []check{
		{name: "back-to-back allows", t: at(u, 2026, 12, 7, 10, 0), open: true, until: at(u, 2026, 12, 7, 17, 0)},
	})

	// One window whose own activations overlap (90m every hour) or touch
	// (2h every 2h) never ends: closed with no Until.
	for _, sp := range []Spec{
		{Kind: "deny", Schedule: "0 * * * *", Duration: "90m"},
		{Kind: "deny", Schedule: "0 */2 * * *", Duration: "2h"},
		{Kind: "deny", Schedule: "0 0 * * 1", Duration: "168h"},
	} {
		runChecks(t, mustCompile(t, sp), []check{{name: sp.Schedule + " " + sp.Duration, t: at(u, 2026, 12, 7, 10, 30), open: false,
			reason: `inside deny window "` + sp.Schedule + `" (` + sp.Duration + `, UTC)`}})
	}
	// A week minus one hour leaves one open hour a week.
	runChecks(t, mustCompile(t, Spec{Kind: "deny", Schedule: "0 0 * * 1", Duration: "167h"}), []check{
		{name: "167h", t: at(u, 2026, 12, 9, 0, 0), open: false, until: at(u, 2026, 12, 13, 23, 0)},
		{name: "167h gap", t: at(u, 2026, 12, 13, 23, 0), open: true, until: at(u, 2026, 12, 14, 0, 0)},
	})
}

func TestSet_At_Descriptor(t *testing.T) {
	s := mustCompile(t, Spec{Kind: "deny", Schedule: "@daily", Duration: "1h", Timezone: "Europe/Berlin"})
	runChecks(t, s, []check{
		{name: "00:30 Berlin", t: at(berlin, 2026, 12, 7, 0, 30), open: false, until: at(berlin, 2026, 12, 7, 1, 0)},
		{name: "noon", t: at(berlin, 2026, 12, 7, 12, 0), open: true, until: at(berlin, 2026, 12, 8, 0, 0)},
	})
}

// The schedule follows Berlin's wall clock; the duration is elapsed time.
func TestSet_At_DST(t *testing.T) {
	utc := time.UTC
	t.Run("spring forward: 24h from Saturday 20:00 ends Sunday 21:00", func(t *testing.T) {
		s := mustCompile(t, Spec{Kind: "deny", Schedule: "0 20 * * 6", Duration: "24h", Timezone: "Europe/Berlin"})
		end := at(utc, 2026, 3, 29, 19, 0) // 21:00 CEST
		got := s.At(at(berlin, 2026, 3, 29, 12, 0))
		if got.Open || !got.Until.Equal(end) {
			t.Fatalf("At = %+v, want closed until %s", got, end)
		}
		want := `inside deny window "0 20 * * 6" (24h, Europe/Berlin) until 2026-03-29T21:00:00+02:00`
		if got.Reason != want {
			t.Errorf("Reason = %q, want %q", got.Reason, want)
		}
	})
	t.Run("fall back: 24h from Saturday 20:00 ends Sunday 19:00", func(t *testing.T) {
		s := mustCompile(t, Spec{Kind: "deny", Schedule: "0 20 * * 6", Duration: "24h", Timezone: "Europe/Berlin"})
		got := s.At(at(berlin, 2026, 10, 25, 12, 0))
		if end := at(utc, 2026, 10, 25, 18, 0); got.Open || !got.Until.Equal(end) {
			t.Fatalf("At = %+v, want closed until %s (19:00 CET)", got, end)
		}
	})
	t.Run("09:00 local is 08:00Z before and 07:00Z after", func(t *testing.T) {
		s := mustCompile(t, Spec{Kind: "allow", Schedule: "0 9 * * *", Duration: "1h", Timezone: "Europe/Berlin"})
		runChecks(t, s, []check{
			{name: "saturday before", t: at(utc, 2026, 3, 28, 7, 0), open: false, until: at(utc, 2026, 3, 28, 8, 0)},
			{name: "saturday after", t: at(utc, 2026, 3, 28, 9, 0), open: false, until: at(utc, 2026, 3, 29, 7, 0)},
			{name: "sunday open", t: at(utc, 2026, 3, 29, 7, 30), open: true, until: at(utc, 2026, 3, 29, 8, 0)},
			{name: "october saturday", t: at(utc, 2026, 10, 24, 8, 0), open: false, until: at(utc, 2026, 10, 25, 8, 0)},
		})
	})
	// robfig/cron: a wall time that does not exist (02:30 on the spring
	// forward Sunday) does not fire; one that exists twice (02:30 on the
	// fall back Sunday) fires at both.
	t.Run("skipped and repeated wall times", func(t *testing.T) {
		s := mustCompile(t, Spec{Kind: "allow", Schedule: "30 2 * * *", Duration: "10m", Timezone: "Europe/Berlin"})
		runChecks(t, s, []check{
			{name: "spring: no 02:30 on Sunday", t: at(berlin, 2026, 3, 28, 12, 0), open: false, until: at(utc, 2026, 3, 30, 0, 30)},
			{name: "fall: first 02:30 (CEST)", t: at(berlin, 2026, 10, 24, 12, 0), open: false, until: at(utc, 2026, 10, 25, 0, 30)},
			{name: "fall: second 02:30 (CET)", t: at(utc, 2026, 10, 25, 0, 40), open: false, until: at(utc, 2026, 10, 25, 1, 30)},
		})
	})
}

// Activations more than five years apart (29 February across 2100) are
// still found: robfig's Next gives up after five years.
func TestSet_At_RareSchedule(t *testing.T) {
	u := time.UTC
	leap := Spec{Kind: "deny", Schedule: "0 0 29 2 *", Duration: "24h"}
	runChecks(t, mustCompile(t, leap), []check{
		{name: "2027: next is 2028", t: at(u, 2027, 1, 1, 0, 0), open: true},
		{name: "2028", t: at(u, 2028, 1, 1, 0, 0), open: true, until: at(u, 2028, 2, 29, 0, 0)},
		{name: "in it", t: at(u, 2028, 2, 29, 5, 0), open: false, until: at(u, 2028, 3, 1, 0, 0)},
	})
	long := leap
	long.Duration = "70000h" // about 8 years: 2104-02-29 covers 2105-01-01
	runChecks(t, mustCompile(t, long), []check{
		{name: "2105", t: at(u, 2105, 1, 1, 0, 0), open: false},
	})
}

func TestSet_At_NilAndEmpty(t *testing.T) {
	var nilSet *Set
	empty, err := Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Set{"nil": nilSet, "empty": empty, "zero": {}} {
		got := s.At(at(time.UTC, 2026, 12, 5, 12, 0))
		if !got.Open || !got.Until.IsZero() || got.Reason != "" {
			t.Errorf("%s set: At = %+v, want open forever", name, got)
		}
	}
}

// A schedule that fires every minute with a chained duration would need
// one evaluation per minute of the horizon; At spends at most MaxSteps and
// stays exact about everything before the point where it stopped.
func TestSet_At_DenseScheduleIsBounded(t *testing.T) {
	u := time.UTC
	always := Spec{Kind: "allow", Schedule: "* * * * *", Duration: "1m"}
	runChecks(t, mustCompile(t, always), []check{
		{name: "always open", t: at(u, 2026, 12, 7, 10, 0), open: true},
	})
	huge := Spec{Kind: "deny", Schedule: "* * * * *", Duration: "2000000h"}
	runChecks(t, mustCompile(t, huge), []check{
		{name: "a 228-year window every minute", t: at(u, 2026, 12, 7, 10, 0), open: false,
			reason: `inside deny window "* * * * *" (2000000h, UTC)`},
	})
	lunch := Spec{Kind: "deny", Schedule: "0 12 * * *", Duration: "1h"}
	runChecks(t, mustCompile(t, always, lunch), []check{
		{name: "flip before the cut", t: at(u, 2026, 12, 7, 10, 0), open: true, until: at(u, 2026, 12, 7, 12, 0)},
		{name: "lunch", t: at(u, 2026, 12, 7, 12, 30), open: false, until: at(u, 2026, 12, 7, 13, 0)},
	})
	newYear := Spec{Kind: "deny", Schedule: "0 0 1 1 *", Duration: "1h"}
	runChecks(t, mustCompile(t, always, newYear), []check{
		{name: "flip after the cut is not claimed", t: at(u, 2026, 12, 7, 10, 0), open: true},
	})
}

// A Set is shared by the reconcile loop and the API: At from many
// goroutines gives the serial answers (run with -race).
func TestSet_At_Concurrent(t *testing.T) {
	s := mustCompile(t,
		Spec{Kind: "deny", Schedule: "0 18 * * 5", Duration: "62h", Timezone: "Europe/Berlin"},
		Spec{Kind: "allow", Schedule: "0 9 * * 1-5", Duration: "8h", Timezone: "Europe/Berlin"})
	base := at(time.UTC, 2026, 12, 1, 0, 0)
	want := make([]State, 48)
	for i := range want {
		want[i] = s.At(base.Add(time.Duration(i) * 3 * time.Hour))
	}
	errs := make(chan string, 8*len(want))
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i, w := range want {
				if got := s.At(base.Add(time.Duration(i) * 3 * time.Hour)); got != w {
					errs <- got.Reason
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	close(errs)
	for e := range errs {
		t.Errorf("concurrent At differs from serial: %q", e)
	}
}
