package state

import (
	"context"
	"testing"
)

func TestStore_JobRunsPerRevisionSurviveReopen(t *testing.T) {
	forEachOpener(t, func(t *testing.T, open func() (*Store, error)) {
		s, err := open()
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if ok, err := s.JobSucceeded(ctx, "a", "r1", "migrate"); err != nil || ok {
			t.Fatalf("before: %v, %v", ok, err)
		}
		for range 2 { // recording twice is fine
			if err := s.RecordJob(ctx, "a", "r1", "migrate"); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		s = mustOpen(t, open)
		for _, c := range []struct {
			app, rev, job string
			want          bool
		}{{"a", "r1", "migrate", true}, {"a", "r2", "migrate", false}, {"a", "r1", "seed", false}, {"b", "r1", "migrate", false}} {
			if ok, err := s.JobSucceeded(ctx, c.app, c.rev, c.job); err != nil || ok != c.want {
				t.Errorf("%s/%s/%s: %v, %v; want %v", c.app, c.rev, c.job, ok, err, c.want)
			}
		}
	})
}
