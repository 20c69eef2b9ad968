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
	every, _ := cron.ParseStandard("@every 10s")
	if at := staggered("shop", every)(now); at.Sub(now) > 10*time.Second {
		t.Errorf("@every 10s: first sweep %s after now, want within the period", at.Sub(now))
	}
}
