// Package state is capstan's record of what it saw and did: git
// revisions, reconcile passes with their per-host steps, drift episodes and
// alert deliveries. By default it is one SQLite file (pure Go driver, WAL
// mode); OpenPostgres keeps it in a PostgreSQL database instead, which
// several replicas of capstan serve share, coordinating through leases
// (one replica reconciles an app at a time, its writes fenced by the
// lease's token), heartbeats and a hand-over queue. Both drivers have the
// same methods and the same numbered schema migrations, which the binary
// applies itself. Every write is one transaction, so a kill -9 at any
// moment leaves a store the next start continues from.
//
// The store never holds a secret: callers pass redacted text only.
package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"
)

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("not found")

// Store is an open state database. It is safe for concurrent use.
type Store struct {
	db handle
	// fence, when set, is the lease every write of this view is checked
	// against (see Fenced).
	fence *Lease
}

// Open opens (creating if needed) the store at path and migrates it.
func Open(path string) (*Store, error) {
	s, err := connectSQLite(path)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(context.Background()); err != nil {
		s.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	_ = os.Chmod(path, 0o600)
	return s, nil
}

// connectSQLite opens the file at path without migrating it.
func connectSQLite(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serializes anyway
	return &Store{db: handle{db: db, d: sqliteDialect}}, nil
}

// OpenPostgres connects to the PostgreSQL database dsn (a URL or
// key=value string; the password belongs in it or in PGPASSWORD, never in
// a log) and migrates it. Several replicas may open one database at once:
// migrations run under an advisory lock. The pool replaces connections
// found dead, so the Store outlives a database restart (a call made on a
// connection the restart cut fails once; callers retry as after any
// store error).
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	s, err := connectPostgres(dsn)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("state postgres: %w", err)
	}
	return s, nil
}

// connectPostgres opens a pool to dsn without migrating it.
func connectPostgres(dsn string) (*Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("state postgres: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &Store{db: handle{db: db, d: postgresDialect}}, nil
}

// Ping checks that the database answers (on PostgreSQL, that a
// connection can be had).
func (s *Store) Ping(ctx context.Context) error { return s.db.db.PingContext(ctx) }

// Driver names the database: "sqlite" or "postgres".
func (s *Store) Driver() string { return s.db.d.name }

// Close closes the database (a Fenced view shares it: close the Store it
// came from, once).
func (s *Store) Close() error { return s.db.db.Close() }

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnix(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func fromNull(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromUnix(n.Int64)
}
