package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/internal/pgtest"
)

// TestMigrations_ReleasedOnesUnchanged: released migrations are never
// edited (a store migrated by an older capstan would differ from a new
// one). Append a migration; never change the hashes here.
func TestMigrations_ReleasedOnesUnchanged(t *testing.T) {
	released := map[string]struct {
		list []string
		n    int
		hash string
	}{
		"sqlite":   {sqliteMigrations, 7, sqliteReleased},
		"postgres": {postgresMigrations, 7, postgresReleased},
	}
	for name, r := range released {
		sum := sha256.Sum256([]byte(strings.Join(r.list[:r.n], "\x00")))
		if got := hex.EncodeToString(sum[:]); got != r.hash {
			t.Errorf("%s migrations 1..%d changed: sha256 %s, released %s", name, r.n, got, r.hash)
		}
	}
}

const (
	sqliteReleased   = "b92dd41306d244430ca890444d444dbcb7cbc0fe4cdf41cbd82bf2ff2bf5d446"
	postgresReleased = "44565e3c91cd464acd927cb69151208be77e002742e10d69682ee244b3be6284"
)

// TestStore_UpgradesFromTheRelease6Schema: a store an older capstan left
// at schema 6, with records, opens migrated to the newest schema with its
// records kept.
func TestStore_UpgradesFromTheRelease6Schema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	connect := map[string]func(t *testing.T) (func() (*Store, error), func() (*Store, error)){
		"sqlite": func(t *testing.T) (func() (*Store, error), func() (*Store, error)) {
			p := filepath.Join(t.TempDir(), "s.db")
			return func() (*Store, error) { return connectSQLite(p) }, func() (*Store, error) { return Open(p) }
		},
		"postgres": func(t *testing.T) (func() (*Store, error), func() (*Store, error)) {
			dsn := pgtest.Start(t)
			return func() (*Store, error) { return connectPostgres(dsn) }, func() (*Store, error) { return OpenPostgres(ctx, dsn) }
		},
	}
	for name, c := range connect {
		t.Run(name, func(t *testing.T) {
			raw, open := c(t)
			old, err := raw()
			if err != nil {
				t.Fatal(err)
			}
			if err := old.migrateTo(ctx, 6); err != nil {
				t.Fatal(err)
			}
			if v, _ := old.SchemaVersion(ctx); v != 6 {
				t.Fatalf("old schema version %d", v)
			}
			id, err := old.StartPass(ctx, Pass{App: "app", Revision: "r1", Trigger: "poll"})
			if err != nil {
				t.Fatal(err)
			}
			old.Close()
			s := mustOpen(t, open)
			if v, _ := s.SchemaVersion(ctx); v != len(sqliteMigrations) {
				t.Fatalf("schema version %d after upgrade", v)
			}
			if h, err := s.History(ctx, "app", 10); err != nil || len(h) != 1 || h[0].ID != id {
				t.Fatalf("history after upgrade: %+v, %v", h, err)
			}
			if _, ok, err := s.AcquireLease(ctx, "app", "r1", 1e9); err != nil || !ok {
				t.Fatalf("lease after upgrade: %v, %v", ok, err)
			}
		})
	}
}

func TestOpenPostgres_ErrorKeepsThePasswordOut(t *testing.T) {
	_, err := OpenPostgres(context.Background(), "postgres://capstan:s3cr3t-pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("opened a database nothing serves")
	}
	if strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

func TestDialect_Rebind(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2"},
		{"SELECT '?' , \"?x\", ? FROM t", "SELECT '?' , \"?x\", $1 FROM t"},
		{"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"},
		{"UPDATE t SET at = {now} + ?", "UPDATE t SET at = " + postgresDialect.now + " + $1"},
		{"SELECT 1", "SELECT 1"},
	} {
		if got := postgresDialect.rebind(c.in); got != c.want {
			t.Errorf("rebind(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := sqliteDialect.rebind("SELECT ? WHERE x < {now}"); got != "SELECT ? WHERE x < "+sqliteDialect.now {
		t.Errorf("sqlite rebind: %q", got)
	}
}
