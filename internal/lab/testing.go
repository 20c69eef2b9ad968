package lab

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// Start returns the shared lab with at least n hosts, bringing it up if
// needed. The lab stays up for the other tests; the test command tears it
// down at the end.
//
// E2E tests must be named TestE2E… so the test command's e2e tier selects
// them. Start skips the test under -short and, with a reason, when the lab
// cannot run here (not root, tools missing); when CI=true a lab that cannot
// run fails the test instead, so CI never passes on skipped e2e tests.
func Start(t testing.TB, n int) *Lab {
	t.Helper()
	if !strings.HasPrefix(t.Name(), "TestE2E") && !strings.HasPrefix(t.Name(), "BenchmarkE2E") {
		t.Fatalf("lab.Start in %s: e2e tests must be named TestE2E… (the test command's e2e tier runs -run '^TestE2E')", t.Name())
	}
	if testing.Short() {
		t.Skip("e2e test: skipped in -short mode (run the e2e tier: .ci/test)")
	}
	if err := Check(); err != nil {
		if errors.Is(err, ErrUnavailable) && os.Getenv("CI") != "true" {
			t.Skipf("e2e test: %v", err)
		}
		t.Fatalf("e2e test: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := Up(ctx, Options{Hosts: n, Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}
