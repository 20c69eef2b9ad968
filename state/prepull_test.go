package state

import (
	"context"
	"testing"
	"time"
)

func TestStore_Prepulls(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		t0 := time.Unix(1_800_000_000, 0)
		for _, p := range []Prepull{
			{App: "a", Version: "v2", Host: "h1", Outcome: "pulled", At: t0},
			{App: "a", Version: "v2", Host: "h2", Outcome: "skipped", Reason: "disk", At: t0},
			{App: "a", Version: "v3", Host: "h1", Outcome: "failed", At: t0.Add(time.Minute)},
			{App: "a", Version: "v3", Host: "h1", Outcome: "pulled", At: t0.Add(2 * time.Minute)}, // retried
			{App: "b", Version: "v9", Host: "h1", Outcome: "pulled", At: t0},
		} {
			if err := s.RecordPrepull(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Prepulls(ctx, "a")
		if err != nil || len(got) != 3 || got[0].Version != "v3" || got[0].Outcome != "pulled" || got[2].Reason != "disk" {
			t.Fatalf("%+v %v", got, err)
		}
		if err := s.ForgetPrepull(ctx, "a", "v2"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Prepulls(ctx, "a"); len(got) != 1 || got[0].Version != "v3" {
			t.Errorf("after forgetting v2: %+v", got)
		}
		if got, _ := s.Prepulls(ctx, "b"); len(got) != 1 {
			t.Errorf("app b: %+v", got)
		}
	})
}
