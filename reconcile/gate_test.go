package reconcile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLoop_UntrustedRevisionTouchesNothing: a revision Verify refuses is
// not loaded, not applied, recorded as untrusted, alerted once over three
// polls, and asked about again only when forced.
func TestLoop_UntrustedRevisionTouchesNothing(t *testing.T) {
	l, h, rec, ev := newTestLoop(t)
	load, verified := l.Load, 0
	loads := 0
	l.Load = func(ctx context.Context, rev Revision) (*App, error) { loads++; return load(ctx, rev) }
	l.Verify = func(_ context.Context, rev Revision) error {
		verified++
		return fmt.Errorf("%w: commit %s by Ada <ada@example.com>: unsigned", ErrUntrusted, rev.SHA)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := l.SyncNow(ctx, TriggerPoll, false); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Status()
	if st.LastOutcome != OutcomeUntrusted || !strings.Contains(st.LastError, "unsigned") {
		t.Fatalf("status %q %q", st.LastOutcome, st.LastError)
	}
	if loads != 0 || len(h.changes) != 0 {
		t.Errorf("an untrusted revision was loaded %d times, changes %v", loads, h.changes)
	}
	if n := ev.count("deploy_refused", ""); n != 1 || verified != 1 {
		t.Errorf("%d deploy_refused alerts and %d verifications over three polls, want 1 and 1", n, verified)
	}
	if strings.Join(rec.passes, ",") != OutcomeUntrusted || !rec.failed {
		t.Errorf("recorded passes %v, attempt failed %v", rec.passes, rec.failed)
	}
	if err := l.SyncNow(ctx, TriggerManual, true); err != nil {
		t.Fatal(err)
	}
	if verified != 2 {
		t.Errorf("a forced sync did not verify the revision again (%d)", verified)
	}
}

// TestLoop_ClosedWindowHoldsTheDeploy: a pass that would change hosts
// waits while the window is closed (shown with when it opens, the loop
// asked to wake then, nothing recorded or changed); an override goes
// through.
func TestLoop_ClosedWindowHoldsTheDeploy(t *testing.T) {
	l, h, rec, _ := newTestLoop(t)
	a, _ := l.Load(context.Background(), Revision{})
	h.set(func() { h.containers = upToDate(a, "v0") }) // every host runs an older version
	opens := time.Now().Add(time.Hour).Truncate(time.Second)
	l.Window = func(time.Time) WindowState {
		return WindowState{Reason: "inside deny window \"0 18 * * 5\"", Until: opens}
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := l.SyncNow(ctx, TriggerPoll, false); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Status()
	if st.LastOutcome != OutcomeWindowClosed || st.Window == nil || !st.Window.Opens.Equal(opens) || !strings.Contains(st.Window.Reason, "deny") {
		t.Fatalf("status %q window %+v", st.LastOutcome, st.Window)
	}
	if len(h.changes) != 0 || len(rec.passes) != 0 || len(rec.converged) != 0 {
		t.Fatalf("held pass changed %v, recorded %v, converged %v", h.changes, rec.passes, rec.converged)
	}
	if at := l.takeWake(); !at.Equal(opens) {
		t.Errorf("the loop wakes at %v, want %v", at, opens)
	}
	l.init()
	if err := l.syncOnce(ctx, l.Log, Request{Kind: TriggerManual, By: "token:ops", Override: true, Force: true}); err != nil {
		t.Fatal(err)
	}
	if st := l.Status(); st.Window != nil || len(h.changes) == 0 {
		t.Errorf("the override was held: window %+v, changes %v", st.Window, h.changes)
	}
}

// TestLoop_SelfHealWaitsForTheWindow: a drift sweep with self-heal on
// records the drift but heals nothing while the window is closed, unless
// HealInWindows.
func TestLoop_SelfHealWaitsForTheWindow(t *testing.T) {
	for _, healInWindows := range []bool{false, true} {
		l, h, _, ev := newTestLoop(t)
		ctx := context.Background()
		if err := l.SyncNow(ctx, TriggerStartup, false); err != nil { // lastGood
			t.Fatal(err)
		}
		h.set(func() { // stopped by hand
			c := h.containers["10.0.0.1"][1]
			c.State, c.Status = "exited", "Exited (0) 1 second ago"
			h.containers["10.0.0.1"][1] = c
		})
		l.SelfHeal = func(*App) bool { return true }
		l.Window = func(time.Time) WindowState { return WindowState{Reason: "inside deny window"} }
		l.HealInWindows = healInWindows
		l.init()
		l.sweep(ctx, l.Log)
		if n := ev.count("drift_opened", DriftStopped); n != 1 {
			t.Errorf("heal_in_windows %v: %d drift_opened alerts, want 1", healInWindows, n)
		}
		if healed := len(h.changes) > 0; healed != healInWindows {
			t.Errorf("heal_in_windows %v: healed %v (changes %v)", healInWindows, healed, h.changes)
		}
	}
}
