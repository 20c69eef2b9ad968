package daemon

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/fence"
)

// The fence of a tenure opens until the deadline of its last renewal: the
// time it was sent plus the TTL, less the margin.
func TestCluster_FenceDeadline(t *testing.T) {
	c := &cluster{ttl: 10 * time.Second, margin: 2 * time.Second, base: time.Now()}
	ten := &tenure{}
	check := c.check("shop", ten)
	ten.deadline.Store(c.deadlineFrom(time.Now()))
	if err := check(); err != nil {
		t.Fatalf("just renewed: %v", err)
	}
	ten.deadline.Store(c.deadlineFrom(time.Now().Add(-8 * time.Second)))
	if err := check(); !errors.Is(err, fence.ErrLost) {
		t.Fatalf("renewed 8 s ago with a 10 s TTL and a 2 s margin: %v, want ErrLost", err)
	}
}

// Replicas prefer the apps in different orders, each order stable.
func TestCluster_Preference(t *testing.T) {
	apps := []string{"a", "b", "c", "d", "e", "f"}
	d := &Daemon{order: apps}
	firsts := map[string]bool{}
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		c := &cluster{d: d, id: id}
		p := c.preference()
		if !slices.Equal(p, c.preference()) {
			t.Errorf("%s: preference changes between calls", id)
		}
		sorted := slices.Clone(p)
		slices.Sort(sorted)
		if !slices.Equal(sorted, apps) {
			t.Errorf("%s: preference %v is not the apps", id, p)
		}
		firsts[p[0]] = true
	}
	if len(firsts) < 2 {
		t.Errorf("4 replicas all prefer the same app first")
	}
}
