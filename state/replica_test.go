package state

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/pgtest"
)

func TestReplicas_HeartbeatAndWithin(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for _, r := range []Replica{{ID: "r2", Addr: "10.0.0.2:8080"}, {ID: "r1", Addr: "old"}, {ID: "r1", Addr: "10.0.0.1:8080"}} {
			if err := s.Heartbeat(ctx, r.ID, r.Addr); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Replicas(ctx, time.Minute)
		if err != nil || len(got) != 2 || got[0].ID != "r1" || got[0].Addr != "10.0.0.1:8080" || got[1].ID != "r2" ||
			time.Since(got[0].Seen).Abs() > 5*time.Second {
			t.Fatalf("replicas: %+v, %v", got, err)
		}
		time.Sleep(400 * time.Millisecond)
		_ = s.Heartbeat(ctx, "r2", "10.0.0.2:8080")
		if got, _ := s.Replicas(ctx, 300*time.Millisecond); len(got) != 1 || got[0].ID != "r2" {
			t.Fatalf("replicas seen within 300ms: %+v", got)
		}
	})
}

func TestHandoffs_RoundTripOldestFirstPerApp(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		in := []Handoff{
			{App: "a", Kind: "deploy", By: "github:ada", Force: true},
			{App: "b", Kind: "deploy"},
			{App: "a", Kind: "rollback", By: "token:ops", Override: true, RerunJobs: true},
		}
		for _, h := range in {
			if err := s.EnqueueHandoff(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ClaimHandoffs(ctx, "a")
		if err != nil || len(got) != 2 {
			t.Fatalf("claim a: %+v, %v", got, err)
		}
		for i, want := range []Handoff{in[0], in[2]} {
			g := got[i]
			if g.ID == 0 || g.Created.IsZero() || g.App != want.App || g.Kind != want.Kind || g.By != want.By ||
				g.Force != want.Force || g.Override != want.Override || g.RerunJobs != want.RerunJobs {
				t.Errorf("hand-over %d: %+v, want %+v", i, g, want)
			}
		}
		if got[0].ID >= got[1].ID {
			t.Errorf("not oldest first: %+v", got)
		}
		if again, _ := s.ClaimHandoffs(ctx, "a"); len(again) != 0 {
			t.Errorf("claimed twice: %+v", again)
		}
		if b, _ := s.ClaimHandoffs(ctx, "b"); len(b) != 1 {
			t.Errorf("app b: %+v", b)
		}
	})
}

// TestHandoffs_ConcurrentClaimsTakeEachOnce: replicas claiming while
// others enqueue: every hand-over is claimed by exactly one.
func TestHandoffs_ConcurrentClaimsTakeEachOnce(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const n = 60
		var mu sync.Mutex
		claimed := map[string]int{}
		var wg sync.WaitGroup
		enqueued := make(chan struct{})
		wg.Go(func() {
			defer close(enqueued)
			for i := range n {
				if err := s.EnqueueHandoff(ctx, Handoff{App: "app", Kind: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
			}
		})
		for range 4 {
			wg.Go(func() {
				for last := false; !last; {
					select {
					case <-enqueued:
						last = true // one more claim after the last enqueue
					default:
					}
					hs, err := s.ClaimHandoffs(ctx, "app")
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, h := range hs {
						claimed[h.Kind]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(claimed) != n {
			t.Errorf("%d of %d hand-overs claimed", len(claimed), n)
		}
		for k, c := range claimed {
			if c != 1 {
				t.Errorf("hand-over %s claimed %d times", k, c)
			}
		}
	})
}

func TestStore_AbandonRunningAppLeavesOtherApps(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		a, _ := s.StartPass(ctx, Pass{App: "a", Revision: "r1", Trigger: "poll"})
		b, _ := s.StartPass(ctx, Pass{App: "b", Revision: "r2", Trigger: "poll"})
		got, err := s.AbandonRunningApp(ctx, "a")
		if err != nil || len(got) != 1 || got[0].ID != a || got[0].Outcome != OutcomeAbandoned {
			t.Fatalf("abandon a: %+v, %v", got, err)
		}
		if h, _ := s.History(ctx, "b", 1); len(h) != 1 || h[0].ID != b || h[0].Outcome != OutcomeRunning {
			t.Errorf("b's pass: %+v", h)
		}
		if _, err := s.AbandonRunningApp(ctx, ""); err == nil {
			t.Error("AbandonRunningApp with no app succeeded")
		}
	})
}

// TestOpenPostgres_ReplicasMigrateAtOnce: replicas starting together on
// an empty database all open it, and it is migrated once.
func TestOpenPostgres_ReplicasMigrateAtOnce(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Start(t)
	ctx := context.Background()
	stores := make([]*Store, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = OpenPostgres(ctx, dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	var rows int
	if err := stores[0].db.QueryRowContext(ctx, `SELECT count(*) FROM schema_version`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("schema_version rows %d, %v", rows, err)
	}
	if v, err := stores[1].SchemaVersion(ctx); err != nil || v != len(postgresMigrations) {
		t.Fatalf("schema version %d, %v", v, err)
	}
}

// TestOpenPostgres_SurvivesADatabaseRestart: a store keeps working after
// PostgreSQL restarts (its pool replaces the dead connections).
func TestOpenPostgres_SurvivesADatabaseRestart(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartServer(t)
	s, err := OpenPostgres(context.Background(), srv.CreateDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Heartbeat(ctx, "r1", "a"); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	var errs []error
	for range 3 { // a connection found dead on use fails that one call
		if err = s.Heartbeat(ctx, "r1", "b"); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if err != nil {
		t.Fatalf("after restart: %v", errs)
	}
	if len(errs) > 0 {
		t.Logf("calls failed after the restart before one went through: %v", errs)
	}
	got, err := s.Replicas(ctx, time.Minute)
	if err != nil || !slices.ContainsFunc(got, func(r Replica) bool { return r.Addr == "b" }) {
		t.Fatalf("replicas after restart: %+v, %v", got, err)
	}
}

func TestClusterID_SameForEveryCaller(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		first, err := s.ClusterID(ctx)
		if err != nil || len(first) != 16 {
			t.Fatalf("ClusterID = %q, %v", first, err)
		}
		again, err := s.ClusterID(ctx)
		if err != nil || again != first {
			t.Errorf("second ClusterID = %q, %v; want %q", again, err, first)
		}
	})
}
