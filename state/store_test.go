package state

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestStore_MigratesOnceAndReopens(t *testing.T) {
	forEachOpener(t, func(t *testing.T, open func() (*Store, error)) {
		s, err := open()
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if v, err := s.SchemaVersion(ctx); err != nil || v != len(s.db.d.migrations) || v != len(sqliteMigrations) {
			t.Fatalf("schema version %d, %v; want %d", v, err, len(sqliteMigrations))
		}
		if err := s.RecordRevision(ctx, Revision{App: "a", SHA: "abc", Author: "Ada", Message: "m"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = mustOpen(t, open)
		if r, err := s.Revision(ctx, "a", "abc"); err != nil || r.Author != "Ada" {
			t.Fatalf("revision after reopen: %+v, %v", r, err)
		}
		if err := s.Ping(ctx); err != nil || (s.Driver() != "sqlite" && s.Driver() != "postgres") {
			t.Errorf("ping %v, driver %q", err, s.Driver())
		}
	})
}

func TestStore_SQLiteFileIsPrivate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v, %v", fi.Mode(), err)
	}
}

// TestMigrations_SameNumbersOnBothDrivers: each driver's list has the
// same length (migration N means the same on both).
func TestMigrations_SameNumbersOnBothDrivers(t *testing.T) {
	if len(sqliteMigrations) != len(postgresMigrations) {
		t.Fatalf("%d SQLite migrations, %d PostgreSQL ones", len(sqliteMigrations), len(postgresMigrations))
	}
}

func TestStore_HistoryIsExact(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		type pass struct{ rev, outcome, err string }
		seq := []pass{{"r1", OutcomeSucceeded, ""}, {"r2", OutcomeSucceeded, ""}, {"r3", OutcomeFailed, "health check failed on 10.0.0.1"}, {"r1", OutcomeSucceeded, ""}}
		for i, p := range seq {
			id, err := s.StartPass(ctx, Pass{App: "app", Revision: p.rev, Version: p.rev, Trigger: "poll"})
			if err != nil {
				t.Fatal(err)
			}
			steps := []Step{{Host: "h1", Step: fmt.Sprint("deploy web ", i), Started: time.Now(), Finished: time.Now(), Result: "ok"}}
			if p.outcome == OutcomeFailed {
				steps[0].Result, steps[0].Error, steps[0].Logs = "failed", p.err, "boom\n"
			}
			if err := s.FinishPass(ctx, id, p.outcome, p.err, "plan text", steps); err != nil {
				t.Fatal(err)
			}
			if err := s.RecordAttempt(ctx, "app", p.rev, p.outcome == OutcomeSucceeded); err != nil {
				t.Fatal(err)
			}
		}
		hist, err := s.History(ctx, "app", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != len(seq) {
			t.Fatalf("%d passes, want %d", len(hist), len(seq))
		}
		for i, h := range hist {
			want := seq[len(seq)-1-i]
			if h.Revision != want.rev || h.Outcome != want.outcome || h.Error != want.err || len(h.Steps) != 1 || h.Finished.IsZero() {
				t.Errorf("pass %d: %+v, want %+v", i, h, want)
			}
		}
		if hist[1].Steps[0].Logs != "boom\n" {
			t.Errorf("failed step logs %q", hist[1].Steps[0].Logs)
		}
		st, _ := s.AppState(ctx, "app")
		if st.LastApplied != "r1" || st.LastAttempted != "r1" || !st.LastAttemptOK {
			t.Errorf("app state %+v", st)
		}
		_ = s.RecordAttempt(ctx, "app", "r4", false)
		st, _ = s.AppState(ctx, "app")
		if st.LastApplied != "r1" || st.LastAttempted != "r4" || st.LastAttemptOK {
			t.Errorf("after a failed attempt, app state %+v: applied and attempted must stay apart", st)
		}
		if n, err := s.PrunePasses(ctx, 2); err != nil || n != 2 {
			t.Errorf("prune: %d, %v", n, err)
		}
		if hist, _ := s.History(ctx, "app", 10); len(hist) != 2 || hist[0].Revision != "r1" {
			t.Errorf("after prune: %+v", hist)
		}
	})
}

func TestStore_DriftEpisodeOpensAndResolvesOnce(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		hosts := []Scope{{Host: "h1"}, {Host: "h2"}}
		item := DriftItem{Host: "h1", Kind: "stopped", Subject: "web", Detail: "testapp-web-v1 is exited"}
		for i := 0; i < 3; i++ {
			opened, resolved, err := s.SyncDrift(ctx, "app", hosts, []DriftItem{item})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[i == 0]; len(opened) != want || len(resolved) != 0 {
				t.Fatalf("sweep %d: opened %d resolved %d", i, len(opened), len(resolved))
			}
		}
		// h1 not observed this sweep (unreachable): its episode stays open.
		if _, resolved, _ := s.SyncDrift(ctx, "app", []Scope{{Host: "h2"}}, nil); len(resolved) != 0 {
			t.Fatalf("episode of an unobserved host resolved")
		}
		opened, resolved, err := s.SyncDrift(ctx, "app", hosts, nil)
		if err != nil || len(opened) != 0 || len(resolved) != 1 || resolved[0].Resolved.IsZero() {
			t.Fatalf("resolve: %+v %+v %v", opened, resolved, err)
		}
		if _, resolved, _ := s.SyncDrift(ctx, "app", hosts, nil); len(resolved) != 0 {
			t.Fatal("resolved twice")
		}
		if open, _ := s.OpenDrift(ctx, "app"); len(open) != 0 {
			t.Fatalf("open after resolve: %+v", open)
		}
		// A new occurrence is a new episode.
		opened, _, _ = s.SyncDrift(ctx, "app", hosts, []DriftItem{item})
		if len(opened) != 1 {
			t.Fatal("recurrence did not open a new episode")
		}
		if hist, _ := s.DriftHistory(ctx, "app", 10); len(hist) != 2 {
			t.Fatalf("history %d episodes", len(hist))
		}
	})
}

func TestStore_ScopedDriftResolvesOnlyItsKinds(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		stopped := DriftItem{Host: "h1", Kind: "stopped", Subject: "web", Detail: "exited"}
		down := DriftItem{Host: "h1", Kind: "unreachable", Detail: "no route to host"}
		if opened, _, _ := s.SyncDrift(ctx, "app", []Scope{{Host: "h1"}}, []DriftItem{stopped}); len(opened) != 1 {
			t.Fatal("stopped not opened")
		}
		// Unreachable: not in scope, the item opens; the stopped episode stays.
		opened, resolved, _ := s.SyncDrift(ctx, "app", nil, []DriftItem{down})
		if len(opened) != 1 || len(resolved) != 0 {
			t.Fatalf("unreachable: opened %+v resolved %+v", opened, resolved)
		}
		// Reached again, not compared: only the unreachable episode resolves.
		_, resolved, _ = s.SyncDrift(ctx, "app", []Scope{{Host: "h1", Kinds: []string{"unreachable"}}}, nil)
		if len(resolved) != 1 || resolved[0].Kind != "unreachable" {
			t.Fatalf("resolved %+v", resolved)
		}
		if open, _ := s.OpenDrift(ctx, "app"); len(open) != 1 || open[0].Kind != "stopped" {
			t.Fatalf("open %+v", open)
		}
	})
}

func TestStore_Converged(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		if err := s.MarkConverged(ctx, "app", "r1", []string{"h1", "h2"}); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkConverged(ctx, "app", "r2", []string{"h2"}); err != nil {
			t.Fatal(err)
		}
		_ = s.MarkConverged(ctx, "other", "x", []string{"h1"})
		got, err := s.Converged(ctx, "app")
		if err != nil || len(got) != 2 || got["h1"] != "r1" || got["h2"] != "r2" {
			t.Fatalf("converged %v %v", got, err)
		}
	})
}

// TestStore_AbandonRunning: passes left running are marked interrupted
// once and returned with what an alert needs; finished ones are left
// alone.
func TestStore_AbandonRunning(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		done, _ := s.StartPass(ctx, Pass{App: "app", Revision: "r1", Version: "v1", Trigger: "poll"})
		if err := s.FinishPass(ctx, done, OutcomeSucceeded, "", "", nil); err != nil {
			t.Fatal(err)
		}
		a, _ := s.StartPass(ctx, Pass{App: "app", Revision: "r2", Version: "v2", Trigger: "webhook"})
		b, _ := s.StartPass(ctx, Pass{App: "other", Revision: "r9", Version: "v9", Trigger: "poll"})
		got, err := s.AbandonRunning(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != a || got[1].ID != b || got[0].App != "app" || got[0].Revision != "r2" || got[0].Version != "v2" ||
			got[0].Trigger != "webhook" || got[0].Outcome != OutcomeAbandoned || got[0].Started.IsZero() || got[0].Finished.IsZero() {
			t.Fatalf("AbandonRunning = %+v", got)
		}
		if again, err := s.AbandonRunning(ctx); err != nil || len(again) != 0 {
			t.Errorf("a second AbandonRunning = %v, %v; want none", again, err)
		}
		h, _ := s.History(ctx, "app", 10)
		if len(h) != 2 || h[0].Outcome != OutcomeAbandoned || h[0].Error != AbandonedError || h[1].Outcome != OutcomeSucceeded {
			t.Errorf("history after AbandonRunning: %+v", h)
		}
	})
}

// TestStore_KillDuringWrites kills a writer process with SIGKILL at a random
// moment, many times, and checks that the store opens and is consistent:
// a finished pass has all its steps, an unfinished one none.
func TestStore_KillDuringWrites(t *testing.T) {
	if os.Getenv("CAPSTAN_STATE_WRITER") != "" {
		writer(os.Getenv("CAPSTAN_STATE_WRITER"))
		return
	}
	p := filepath.Join(t.TempDir(), "s.db")
	rounds := 8
	if testing.Short() {
		rounds = 3
	}
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStore_KillDuringWrites$")
		cmd.Env = append(os.Environ(), "CAPSTAN_STATE_WRITER="+p)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(150+round*37) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()

		s, err := Open(p)
		if err != nil {
			t.Fatalf("round %d: open after kill -9: %v", round, err)
		}
		ctx := context.Background()
		var integrity string
		if err := s.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
			t.Fatalf("round %d: integrity %q %v", round, integrity, err)
		}
		hist, err := s.History(ctx, "", 100000)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hist {
			wantSteps, _ := strconv.Atoi(h.Plan)
			switch h.Outcome {
			case OutcomeRunning:
				if len(h.Steps) != 0 {
					t.Fatalf("round %d: running pass %d has %d steps", round, h.ID, len(h.Steps))
				}
			case OutcomeSucceeded:
				if len(h.Steps) != wantSteps {
					t.Fatalf("round %d: pass %d has %d of %d steps", round, h.ID, len(h.Steps), wantSteps)
				}
			}
		}
		if _, err := s.AbandonRunning(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

func writer(path string) {
	s, err := Open(path)
	if err != nil {
		os.Exit(3)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		n := 1 + i%7
		id, err := s.StartPass(ctx, Pass{App: "app", Revision: strconv.Itoa(i), Trigger: "poll"})
		if err != nil {
			os.Exit(4)
		}
		steps := make([]Step, n)
		for j := range steps {
			steps[j] = Step{Host: "h", Step: "s", Started: time.Now(), Finished: time.Now(), Result: "ok"}
		}
		if err := s.FinishPass(ctx, id, OutcomeSucceeded, "", strconv.Itoa(n), steps); err != nil {
			os.Exit(5)
		}
	}
}

// TestStore_RevisionRewritten: a revision keeps its first sighting; a
// force-push back to it adds (or replaces) the rewrite note, and a later
// plain sighting does not erase it.
func TestStore_RevisionRewritten(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		rec := func(note string) {
			t.Helper()
			if err := s.RecordRevision(ctx, Revision{App: "a", SHA: "abc", Author: "Ada", Message: "m", Rewritten: note}); err != nil {
				t.Fatal(err)
			}
		}
		rec("")
		rec("branch main was force-pushed back from def to an older commit abc")
		rec("")
		r, err := s.Revision(ctx, "a", "abc")
		if err != nil {
			t.Fatal(err)
		}
		if r.Rewritten != "branch main was force-pushed back from def to an older commit abc" || r.Author != "Ada" {
			t.Errorf("revision %+v", r)
		}
	})
}

func TestStore_DeliveriesAndReminders(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		if err := s.RecordDelivery(ctx, "slack", "deploy_failed", "app", `{"text":"x"}`, 1, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordDelivery(ctx, "webhook", "drift", "app", `{}`, 3, fmt.Errorf("503 from the sink")); err != nil {
			t.Fatal(err)
		}
		d, err := s.Deliveries(ctx, 10)
		if err != nil || len(d) != 2 || d[0].Sink != "webhook" || d[0].Delivered || d[0].Attempts != 3 || d[0].Error != "503 from the sink" ||
			!d[1].Delivered || d[1].Payload != `{"text":"x"}` {
			t.Fatalf("deliveries: %+v, %v", d, err)
		}
		if _, _, err := s.SyncDrift(ctx, "app", nil, []DriftItem{{Host: "h1", Kind: "stopped", Detail: "exited"}}); err != nil {
			t.Fatal(err)
		}
		if due, err := s.DueReminders(ctx, time.Hour); err != nil || len(due) != 0 {
			t.Fatalf("reminders due within the hour: %+v, %v", due, err)
		}
		due, err := s.DueReminders(ctx, 0)
		if err != nil || len(due) != 1 || due[0].Host != "h1" {
			t.Fatalf("reminders due now: %+v, %v", due, err)
		}
		if open, _ := s.OpenDrift(ctx, ""); len(open) != 1 || open[0].Reminded.IsZero() {
			t.Errorf("open drift after a reminder: %+v", open)
		}
	})
}
