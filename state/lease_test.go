package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func acquire(t *testing.T, s *Store, app, owner string, ttl time.Duration) (Lease, bool) {
	t.Helper()
	l, ok, err := s.AcquireLease(context.Background(), app, owner, ttl)
	if err != nil {
		t.Fatalf("acquire %s for %s: %v", app, owner, err)
	}
	return l, ok
}

// expire waits until a lease of ttl taken now has expired by the
// database's clock (on the machine, the same clock as the test's).
func expire(ttl time.Duration) { time.Sleep(ttl + 30*time.Millisecond) }

// shorten renews l to expire in ttl: a test holds a lease for as long
// as its writes take, then lets it run out.
func shorten(t *testing.T, s *Store, l Lease, ttl time.Duration) Lease {
	t.Helper()
	l, err := s.RenewLease(context.Background(), l, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLease_AcquireRenewTakeoverRelease(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		a, ok := acquire(t, s, "app", "r1", time.Minute)
		if !ok || a.Token != 1 || a.Owner != "r1" || a.App != "app" || time.Until(a.Expires) < 50*time.Second {
			t.Fatalf("first acquire: %+v, %v", a, ok)
		}
		if l, ok := acquire(t, s, "app", "r2", time.Minute); ok {
			t.Fatalf("r2 took a held lease: %+v", l)
		}
		again, ok := acquire(t, s, "app", "r1", 2*time.Minute)
		if !ok || again.Token != 1 || !again.Expires.After(a.Expires) {
			t.Fatalf("re-acquire by the holder: %+v, %v; want token 1, later expiry than %v", again, ok, a.Expires)
		}
		renewed, err := s.RenewLease(ctx, again, 3*time.Minute)
		if err != nil || renewed.Token != 1 || !renewed.Expires.After(again.Expires) {
			t.Fatalf("renew: %+v, %v", renewed, err)
		}

		// Expired: another owner takes it over, with the next token.
		short, _ := acquire(t, s, "other", "r1", 40*time.Millisecond)
		expire(40 * time.Millisecond)
		if _, err := s.RenewLease(ctx, short, time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew of an expired lease: %v, want ErrLeaseLost", err)
		}
		taken, ok := acquire(t, s, "other", "r2", time.Minute)
		if !ok || taken.Token != short.Token+1 || taken.Owner != "r2" {
			t.Fatalf("takeover of an expired lease: %+v, %v", taken, ok)
		}
		if _, err := s.RenewLease(ctx, short, time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew after takeover: %v, want ErrLeaseLost", err)
		}
		// The old holder's release leaves the new holder's lease alone.
		if err := s.ReleaseLease(ctx, short); err != nil {
			t.Fatal(err)
		}
		if l, ok := acquire(t, s, "other", "r3", time.Minute); ok {
			t.Fatalf("a stale release freed the new holder's lease: %+v", l)
		}
		leases, err := s.Leases(ctx)
		if err != nil || len(leases) != 2 || leases[0].App != "app" || leases[0].Owner != "r1" || leases[1].App != "other" || leases[1].Owner != "r2" {
			t.Fatalf("leases: %+v, %v", leases, err)
		}

		// Released: free at once, and the next holder's token is higher
		// even when it is the same owner.
		if err := s.ReleaseLease(ctx, taken); err != nil {
			t.Fatal(err)
		}
		if leases, _ := s.Leases(ctx); len(leases) != 1 {
			t.Fatalf("after release, leases %+v", leases)
		}
		back, ok := acquire(t, s, "other", "r2", time.Minute)
		if !ok || back.Token != taken.Token+1 {
			t.Fatalf("acquire after release: %+v, %v; want token %d", back, ok, taken.Token+1)
		}

		// The same owner after its own lease expired, no one between:
		// it keeps its token.
		mine, _ := acquire(t, s, "third", "r1", 40*time.Millisecond)
		expire(40 * time.Millisecond)
		if again, ok := acquire(t, s, "third", "r1", time.Minute); !ok || again.Token != mine.Token {
			t.Fatalf("re-acquire of an own expired lease: %+v, %v; want token %d", again, ok, mine.Token)
		}
		if _, _, err := s.AcquireLease(ctx, "x", "", time.Minute); err == nil {
			t.Error("acquire with no owner succeeded")
		}
	})
}

// TestLease_FencedWritesRefusedAfterTakeover: every write through the old
// holder's view fails with ErrLeaseLost and changes nothing once another
// replica holds the lease; the new holder's view writes; reads pass.
func TestLease_FencedWritesRefusedAfterTakeover(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		l1, _ := acquire(t, s, "app", "r1", time.Minute)
		f1 := s.Fenced(l1)
		id, err := f1.StartPass(ctx, Pass{App: "app", Revision: "r1", Trigger: "poll"})
		if err != nil {
			t.Fatalf("a write under a held lease: %v", err)
		}
		if err := f1.RecordAttempt(ctx, "app", "rev1", true); err != nil {
			t.Fatal(err)
		}
		if err := s.EnqueueHandoff(ctx, Handoff{App: "app", Kind: "deploy"}); err != nil {
			t.Fatal(err)
		}
		shorten(t, s, l1, 20*time.Millisecond)
		expire(20 * time.Millisecond)
		if err := f1.RecordJob(ctx, "app", "rev1", "migrate"); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("a write under an expired lease: %v, want ErrLeaseLost", err)
		}
		l2, ok := acquire(t, s, "app", "r2", time.Minute)
		if !ok || l2.Token != l1.Token+1 {
			t.Fatalf("takeover: %+v, %v", l2, ok)
		}
		writes := map[string]func() error{
			"FinishPass": func() error {
				return f1.FinishPass(ctx, id, OutcomeSucceeded, "", "", []Step{{Host: "h", Step: "s", Result: "ok"}})
			},
			"StartPass":     func() error { _, err := f1.StartPass(ctx, Pass{App: "app", Trigger: "poll"}); return err },
			"RecordAttempt": func() error { return f1.RecordAttempt(ctx, "app", "rev2", true) },
			"MarkConverged": func() error { return f1.MarkConverged(ctx, "app", "rev2", []string{"h"}) },
			"SyncDrift": func() error {
				_, _, err := f1.SyncDrift(ctx, "app", nil, []DriftItem{{Host: "h", Kind: "k"}})
				return err
			},
			"RecordJob":      func() error { return f1.RecordJob(ctx, "app", "rev2", "migrate") },
			"RecordRevision": func() error { return f1.RecordRevision(ctx, Revision{App: "app", SHA: "x"}) },
			"RecordPrepull":  func() error { return f1.RecordPrepull(ctx, Prepull{App: "app", Version: "v", Host: "h"}) },
			"AbandonRunning": func() error { _, err := f1.AbandonRunningApp(ctx, "app"); return err },
			"ClaimHandoffs":  func() error { _, err := f1.ClaimHandoffs(ctx, "app"); return err },
		}
		for name, w := range writes {
			if err := w(); !errors.Is(err, ErrLeaseLost) {
				t.Errorf("%s through the old holder's view: %v, want ErrLeaseLost", name, err)
			}
		}
		// Nothing of those writes landed; reads through the view pass.
		if h, err := f1.History(ctx, "app", 10); err != nil || len(h) != 1 || h[0].Outcome != OutcomeRunning || len(h[0].Steps) != 0 {
			t.Errorf("history after refused writes: %+v, %v", h, err)
		}
		if st, _ := f1.AppState(ctx, "app"); st.LastApplied != "rev1" {
			t.Errorf("app state after a refused write: %+v", st)
		}
		if c, _ := s.Converged(ctx, "app"); len(c) != 0 {
			t.Errorf("converged after a refused write: %v", c)
		}
		// The new holder writes, and takes the hand-over the old one could not.
		f2 := s.Fenced(l2)
		if got, err := f2.AbandonRunningApp(ctx, "app"); err != nil || len(got) != 1 || got[0].ID != id {
			t.Fatalf("new holder abandons the old pass: %+v, %v", got, err)
		}
		if hs, err := f2.ClaimHandoffs(ctx, "app"); err != nil || len(hs) != 1 {
			t.Fatalf("new holder claims: %+v, %v", hs, err)
		}
		// Released by its holder: its view is refused too.
		if err := s.ReleaseLease(ctx, l2); err != nil {
			t.Fatal(err)
		}
		if err := f2.RecordJob(ctx, "app", "rev2", "migrate"); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("write after release: %v, want ErrLeaseLost", err)
		}
	})
}

// TestLease_OneWinnerOfConcurrentAcquire: replicas racing for a free or
// expired lease: exactly one gets it, each round.
func TestLease_OneWinnerOfConcurrentAcquire(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for round := range 5 {
			app := fmt.Sprint("app", round%2) // rounds 2.. race for an expired lease
			var wg sync.WaitGroup
			won := make(chan Lease, 3)
			for r := range 3 {
				wg.Go(func() {
					l, ok, err := s.AcquireLease(ctx, app, fmt.Sprintf("r%d-%d", r, round), time.Minute)
					if err != nil {
						t.Error(err)
					}
					if ok {
						won <- l
					}
				})
			}
			wg.Wait()
			close(won)
			var winners []Lease
			for l := range won {
				winners = append(winners, l)
			}
			if len(winners) != 1 {
				t.Fatalf("round %d: %d winners: %+v", round, len(winners), winners)
			}
			if want := int64(round/2 + 1); winners[0].Token != want {
				t.Errorf("round %d: token %d, want %d", round, winners[0].Token, want)
			}
			shorten(t, s, winners[0], time.Millisecond)
			expire(time.Millisecond)
		}
	})
}

// TestLease_FencedWriteNeverLandsAfterTakeover: the old holder writes
// without pause while another replica takes the lease over at its expiry;
// every write reported done is stored, every refused one is not, and none
// lands after the takeover returned.
func TestLease_FencedWriteNeverLandsAfterTakeover(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		l1, _ := acquire(t, s, "app", "r1", time.Minute)
		f1 := s.Fenced(l1)
		if err := f1.RecordJob(ctx, "app", "rev", "first"); err != nil {
			t.Fatal(err)
		}
		shorten(t, s, l1, 100*time.Millisecond)
		var taken time.Time
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if _, ok, err := s.AcquireLease(ctx, "app", "r2", time.Minute); err != nil || ok {
					taken = time.Now()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		var ok, refused []string
		for i := 0; ; i++ {
			job := fmt.Sprint("job", i)
			start := time.Now()
			err := f1.RecordJob(ctx, "app", "rev", job)
			if err == nil {
				ok = append(ok, job)
				select {
				case <-done:
					if start.After(taken) {
						t.Fatalf("write %s started after the takeover and landed", job)
					}
				default:
				}
				continue
			}
			if !errors.Is(err, ErrLeaseLost) {
				t.Fatal(err)
			}
			refused = append(refused, job)
			if len(refused) == 3 {
				break
			}
		}
		<-done
		if len(ok) == 0 {
			t.Fatal("no write landed under the held lease")
		}
		for _, j := range ok {
			if got, _ := s.JobSucceeded(ctx, "app", "rev", j); !got {
				t.Errorf("%s reported done, not stored", j)
			}
		}
		for _, j := range refused {
			if got, _ := s.JobSucceeded(ctx, "app", "rev", j); got {
				t.Errorf("%s refused, but stored", j)
			}
		}
	})
}

// TestLease_TakeoverWaitsForAFencedWriteUnderWay: a write transaction
// that passed its lease check holds the lease until it ends, so a
// takeover (even of a lease that expired meanwhile) waits for it, and the
// new holder starts after the old holder's last write.
func TestLease_TakeoverWaitsForAFencedWriteUnderWay(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		l1, _ := acquire(t, s, "app", "r1", time.Minute)
		l1 = shorten(t, s, l1, 100*time.Millisecond)
		tx, err := s.Fenced(l1).begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		expire(100 * time.Millisecond)
		took := make(chan Lease, 1)
		go func() {
			l, ok, err := s.AcquireLease(ctx, "app", "r2", time.Minute)
			if err != nil || !ok {
				t.Errorf("takeover: %+v, %v, %v", l, ok, err)
			}
			took <- l
		}()
		select {
		case l := <-took:
			t.Fatalf("the lease was taken over (%+v) while a fenced write was under way", l)
		case <-time.After(300 * time.Millisecond):
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO job_runs (app, revision, job, succeeded_at) VALUES ('app', 'rev', 'last', 1)`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if l2 := <-took; l2.Token != l1.Token+1 {
			t.Fatalf("takeover after the write: %+v", l2)
		}
		if ok, _ := s.JobSucceeded(ctx, "app", "rev", "last"); !ok {
			t.Error("the write under way was lost")
		}
	})
}
