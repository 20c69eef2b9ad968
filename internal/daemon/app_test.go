package daemon

import (
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// Apps on one schedule sweep at different moments within half a minute,
// each still once per period.
func TestStaggered(t *testing.T) {
	sched, err := cron.ParseStandard("*/5 * * * *")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 10, 3, 0, 0, time.UTC)
	seen := map[time.Time]bool{}
	for _, app := range []string{"shop", "blog", "api", "docs", "admin"} {
		next := staggered(app, sched)
		at := next(now)
		if at.Before(time.Date(2026, 11, 30, 10, 5, 0, 0, time.UTC)) || !at.Before(time.Date(2026, 11, 30, 10, 5, 30, 0, time.UTC)) {
			t.Errorf("%s sweeps at %s, want within 30 s after 10:05", app, at)
		}
		if again := next(at); again.Sub(at) != 5*time.Minute {
			t.Errorf("%s: next sweep after %s is %s, want 5 min later", app, at, again)
		}
		if justBefore := next(at.Add(-time.Millisecond)); !justBefore.Equal(at) {
			t.Errorf("%s: from just before its sweep, next is %s, want %s", app, justBefore, at)
		}
		seen[at] = true
	}
	if len(seen) < 4 {
		t.Errorf("5 apps sweep at only %d distinct moments", len(seen))
	}
	// "@every 10s": the first sweeps spread over 5 s, then every 10 s.
	every, _ := cron.ParseStandard("@every 10s")
	firsts := map[time.Duration]bool{}
	for _, app := range []string{"shop", "blog", "api", "docs", "admin"} {
		next := staggered(app, every)
		at := next(now)
		if d := at.Sub(now); d < 10*time.Second || d >= 15*time.Second {
			t.Errorf("@every 10s: %s sweeps first %s after the start, want 10–15 s", app, d)
		}
		firsts[at.Sub(now)] = true
		// (cron rounds an @every activation down to the second)
		if d := next(at).Sub(at); d <= 9*time.Second || d > 10*time.Second {
			t.Errorf("@every 10s: %s's second sweep %s after its first, want 10 s", app, d)
		}
	}
	if len(firsts) < 4 {
		t.Errorf("@every 10s: 5 apps sweep first at only %d distinct moments", len(firsts))
	}
}
