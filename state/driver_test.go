package state

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// driver makes new, empty databases of one kind.
type driver struct {
	name string
	// fresh makes a database for t and returns how to open it (each call
	// opens it again, as a restarted process or another replica would).
	fresh func(t *testing.T) func() (*Store, error)
}

var drivers = []driver{
	{"sqlite", func(t *testing.T) func() (*Store, error) {
		p := filepath.Join(t.TempDir(), "state.db")
		return func() (*Store, error) { return Open(p) }
	}},
	{"postgres", func(t *testing.T) func() (*Store, error) {
		dsn := pgtest.Start(t)
		return func() (*Store, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return OpenPostgres(ctx, dsn)
		}
	}},
}

// forEachOpener runs fn once per driver, with a new database and the way
// to open it. The test runs in parallel with other such tests (most of a
// PostgreSQL test is waiting for the server).
func forEachOpener(t *testing.T, fn func(t *testing.T, open func() (*Store, error))) {
	t.Helper()
	t.Parallel()
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) { fn(t, d.fresh(t)) })
	}
}

// forEachDriver runs fn once per driver on a new, open store (closed when
// the subtest ends).
func forEachDriver(t *testing.T, fn func(t *testing.T, s *Store)) {
	t.Helper()
	forEachOpener(t, func(t *testing.T, open func() (*Store, error)) {
		fn(t, mustOpen(t, open))
	})
}

// mustOpen opens the store and closes it when t ends.
func mustOpen(t *testing.T, open func() (*Store, error)) *Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
