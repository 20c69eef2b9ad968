// Package window decides whether a deploy may run at a given instant, from
// allow and deny windows with Argo CD's sync-window semantics.
//
// A window is a cron schedule (standard 5 fields or a descriptor such as
// @daily), a duration and a time zone. Each activation of the schedule opens
// the window for the duration: the window is active on [a, a+duration) for
// every activation a. The schedule is evaluated on the wall clock of the
// window's time zone (so "0 9 * * 1-5" in Europe/Berlin is 09:00 local time
// on both sides of a DST change); the duration is elapsed time. As in
// robfig/cron, a wall time skipped by a DST change does not fire that day
// and one repeated by it fires twice.
//
// Deploys are open at t when no deny window is active at t and, if the set has
// at least one allow window, some allow window is active at t. Deny wins over
// allow. A set without windows, and a nil *Set, is always open.
//
// The package is pure logic: no clock, no I/O. Callers pass the instant;
// State.Until tells them when to look again.
package window

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	// A FROM-scratch container has no zoneinfo; embed it so that every
	// IANA name in a window resolves.
	_ "time/tzdata"
)

// Kinds of window, the values of Spec.Kind.
const (
	KindAllow = "allow"
	KindDeny  = "deny"
)

// DefaultTimezone is the zone used when Spec.Timezone is empty.
const DefaultTimezone = "UTC"

// Spec is one window as written in capstan.yml (windows[i]).
type Spec struct {
	// Kind is "allow" or "deny".
	Kind string `yaml:"kind"`
	// Schedule is a standard 5-field cron expression or a descriptor
	// (@yearly, @monthly, @weekly, @daily, @hourly); @every is refused
	// because it is not anchored to the wall clock. It must not carry a
	// TZ= or CRON_TZ= prefix: the zone comes from Timezone.
	Schedule string `yaml:"schedule"`
	// Duration is a Go duration (time.ParseDuration), > 0.
	Duration string `yaml:"duration"`
	// Timezone is an IANA zone name; empty means UTC. "Local" is refused:
	// the result must not depend on the host running capstan.
	Timezone string `yaml:"timezone"`
}

// SpecError is one invalid field of one window. Compile returns every
// SpecError it finds, joined with errors.Join, in index then key order;
// use errors.As for the first, or the Unwrap() []error of the joined error
// for all of them.
type SpecError struct {
	Index int    // position in the specs slice (windows[Index])
	Key   string // "kind", "schedule", "duration" or "timezone"
	Msg   string // what is wrong, without the location prefix
}

// Error returns "windows[Index].Key: Msg".
func (e *SpecError) Error() string {
	return fmt.Sprintf("windows[%d].%s: %s", e.Index, e.Key, e.Msg)
}

// Set is a compiled, immutable list of windows, safe for concurrent use.
// The zero value and a nil *Set have no windows and are always open.
type Set struct {
	windows []window
	allows  int // number of allow windows
}

// window is one compiled Spec.
type window struct {
	spec  Spec // as written, Timezone defaulted
	deny  bool
	sched *cron.SpecSchedule // Location set to loc
	dur   time.Duration
	loc   *time.Location
}

// Compile validates every spec and returns the compiled set. An empty or
// nil specs gives a set that is always open. On error the *Set is nil and
// the error joins one *SpecError per invalid field (see SpecError).
func Compile(specs []Spec) (*Set, error) {
	set := &Set{windows: make([]window, 0, len(specs))}
	var errs []error
	for i, sp := range specs {
		w, werrs := compileOne(i, sp)
		errs = append(errs, werrs...)
		if len(werrs) == 0 {
			set.windows = append(set.windows, w)
			if !w.deny {
				set.allows++
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

// compileOne validates specs[i]; every invalid field gives one *SpecError.
func compileOne(i int, sp Spec) (window, []error) {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, &SpecError{Index: i, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	w := window{spec: sp}
	w.spec.Schedule, w.spec.Duration = strings.TrimSpace(sp.Schedule), strings.TrimSpace(sp.Duration)
	switch sp.Kind {
	case KindAllow:
	case KindDeny:
		w.deny = true
	case "":
		fail("kind", "required (%q or %q)", KindAllow, KindDeny)
	default:
		fail("kind", "must be %q or %q, got %q", KindAllow, KindDeny, sp.Kind)
	}
	sched, err := parseSchedule(sp.Schedule)
	if err != nil {
		fail("schedule", "%v", err)
	}
	w.sched = sched
	w.dur, err = parseDuration(sp.Duration)
	if err != nil {
		fail("duration", "%v", err)
	}
	if w.spec.Timezone == "" {
		w.spec.Timezone = DefaultTimezone
	}
	w.loc, err = loadZone(w.spec.Timezone)
	if err != nil {
		fail("timezone", "%v", err)
	}
	if len(errs) > 0 {
		return window{}, errs
	}
	w.sched.Location = w.loc
	return w, nil
}

// parseSchedule parses a standard cron expression or descriptor and refuses
// what is not a wall-clock schedule (@every, a TZ prefix).
func parseSchedule(s string) (*cron.SpecSchedule, error) {
	trimmed := strings.TrimSpace(s)
	switch {
	case trimmed == "":
		return nil, errors.New("required (a 5-field cron expression such as \"0 18 * * 5\")")
	case strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ="):
		return nil, errors.New("no TZ= prefix: set the timezone key instead")
	case strings.HasPrefix(trimmed, "@every"):
		return nil, errors.New("@every is not anchored to the clock: use a cron expression")
	}
	parsed, err := cron.ParseStandard(trimmed)
	if err != nil {
		return nil, err
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("%q is not a cron expression", s)
	}
	return spec, nil
}

// parseDuration parses a Go duration that must be > 0.
func parseDuration(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, errors.New("required (a Go duration such as \"8h\")")
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be > 0, got %s", s)
	}
	return d, nil
}

// loadZone resolves an IANA name from the embedded tzdata; "Local" is
// refused so that a window means the same on every host.
func loadZone(name string) (*time.Location, error) {
	if name == "Local" {
		return nil, errors.New("\"Local\" depends on the host: use an IANA name such as \"Europe/Berlin\"")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (use an IANA name such as \"Europe/Berlin\")", name)
	}
	return loc, nil
}
