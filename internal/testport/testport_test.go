package testport

import (
	"net"
	"testing"
)

func TestFree_BelowTheEphemeralRangeAndBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := Free(t)
		if p < 20000 || p >= 32000 {
			t.Fatalf("port %d outside 20000-31999", p)
		}
		seen[p] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct ports in 20 draws", len(seen))
	}
	l, err := net.Listen("tcp", Addr(t))
	if err != nil {
		t.Fatalf("Addr is not bindable: %v", err)
	}
	l.Close()
}
