package window

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// refWindow is Argo CD's own test for one window, built straight from
// robfig/cron: active at x when the first activation after x-duration is
// not after x.
type refWindow struct {
	deny  bool
	sched cron.Schedule
	dur   time.Duration
}

func (w refWindow) active(x time.Time) bool {
	n := w.sched.Next(x.Add(-w.dur))
	return !n.IsZero() && !n.After(x)
}

func refOpen(ws []refWindow, x time.Time) bool {
	allows, allowed := 0, false
	for _, w := range ws {
		switch {
		case w.deny && w.active(x):
			return false
		case !w.deny:
			allows++
			allowed = allowed || w.active(x)
		}
	}
	return allows == 0 || allowed
}

// TestSet_At_MatchesReference compares At with a minute-by-minute scan of
// Argo's rule over random sets. Schedules, durations, zone offsets and t
// are whole minutes, so every flip falls on the scanned grid.
func TestSet_At_MatchesReference(t *testing.T) {
	schedules := []string{"0 18 * * 5", "0 9 * * 1-5", "*/15 * * * *", "30 2 * * *", "0 */3 * * *", "@daily",
		"@hourly", "0 0 * * 1", "15 8-17 * * *", "0 12 1 * *", "45 23 * * 0,6", "0 1 * * 0"}
	durations := []string{"1m", "10m", "45m", "1h", "90m", "8h", "25h", "62h", "168h"}
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"}
	// Around the 2026 DST changes in Europe and the US, and a plain week.
	starts := []time.Time{at(time.UTC, 2026, 3, 6, 0, 0), at(time.UTC, 2026, 3, 25, 0, 0),
		at(time.UTC, 2026, 10, 22, 0, 0), at(time.UTC, 2026, 10, 30, 0, 0), at(time.UTC, 2026, 12, 3, 0, 0)}
	const span = 4 * 24 * time.Hour
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	cases := 40
	if testing.Short() {
		cases = 12
	}
	for i := range cases {
		var specs []Spec
		var ref []refWindow
		for range 1 + rng.IntN(3) {
			sp := Spec{Kind: KindAllow, Schedule: pick(schedules), Duration: pick(durations), Timezone: pick(zones)}
			if rng.IntN(2) == 0 {
				sp.Kind = KindDeny
			}
			sched, err := cron.ParseStandard("CRON_TZ=" + sp.Timezone + " " + sp.Schedule)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := time.ParseDuration(sp.Duration)
			specs = append(specs, sp)
			ref = append(ref, refWindow{deny: sp.Kind == KindDeny, sched: sched, dur: d})
		}
		set := mustCompile(t, specs...)
		start := starts[rng.IntN(len(starts))].Add(time.Duration(rng.IntN(4*24*60)) * time.Minute)
		name := fmt.Sprintf("case %d at %s %+v", i, start.Format(time.RFC3339), specs)
		got := set.At(start)
		if want := refOpen(ref, start); got.Open != want {
			t.Fatalf("%s: Open = %v, reference %v", name, got.Open, want)
		}
		var flip time.Time
		for x := start.Add(time.Minute); !x.After(start.Add(span)); x = x.Add(time.Minute) {
			if refOpen(ref, x) != got.Open {
				flip = x
				break
			}
		}
		switch {
		case flip.IsZero() && !got.Until.IsZero() && !got.Until.After(start.Add(span)):
			t.Errorf("%s: Until = %s, reference sees no change within %s", name, got.Until, span)
		case !flip.IsZero() && !flip.Equal(got.Until):
			t.Errorf("%s: Until = %s, reference flips at %s", name, got.Until, flip)
		}
	}
}
