// Package state is capstan's embedded record of what it saw and did: git
// revisions, reconcile passes with their per-host steps, drift episodes and
// alert deliveries, in one SQLite file (pure Go driver, WAL mode). The
// schema is migrated by the binary itself. Every write is one transaction,
// so a kill -9 at any moment leaves a store the next start continues from.
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

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("not found")

// Store is an open state database. It is safe for concurrent use.
type Store struct {
	db *sql.DB
}

// migrations are applied in order; the schema version is PRAGMA
// user_version. Append only: never edit a released migration.
var migrations = []string{
	// 1: the initial schema.
	`CREATE TABLE revisions (
		app TEXT NOT NULL,
		sha TEXT NOT NULL,
		author TEXT NOT NULL DEFAULT '',
		message TEXT NOT NULL DEFAULT '',
		committed_at INTEGER NOT NULL DEFAULT 0,
		seen_at INTEGER NOT NULL,
		PRIMARY KEY (app, sha)
	);
	CREATE TABLE passes (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		app TEXT NOT NULL,
		revision TEXT NOT NULL DEFAULT '',
		version TEXT NOT NULL DEFAULT '',
		trigger TEXT NOT NULL,
		started_at INTEGER NOT NULL,
		finished_at INTEGER,
		outcome TEXT NOT NULL DEFAULT 'running',
		error TEXT NOT NULL DEFAULT '',
		plan TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX passes_app ON passes (app, id);
	CREATE TABLE host_steps (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		pass_id INTEGER NOT NULL REFERENCES passes(id) ON DELETE CASCADE,
		host TEXT NOT NULL,
		step TEXT NOT NULL,
		started_at INTEGER NOT NULL,
		finished_at INTEGER NOT NULL,
		result TEXT NOT NULL,
		error TEXT NOT NULL DEFAULT '',
		logs TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX host_steps_pass ON host_steps (pass_id);
	CREATE TABLE drift_episodes (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		app TEXT NOT NULL,
		host TEXT NOT NULL,
		kind TEXT NOT NULL,
		subject TEXT NOT NULL DEFAULT '',
		detail TEXT NOT NULL,
		opened_at INTEGER NOT NULL,
		resolved_at INTEGER,
		reminded_at INTEGER
	);
	CREATE UNIQUE INDEX drift_open ON drift_episodes (app, host, kind, subject) WHERE resolved_at IS NULL;
	CREATE TABLE alert_deliveries (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		sink TEXT NOT NULL,
		event TEXT NOT NULL,
		app TEXT NOT NULL,
		dedup_key TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		delivered_at INTEGER,
		last_error TEXT NOT NULL DEFAULT '',
		payload TEXT NOT NULL
	);
	CREATE UNIQUE INDEX alert_dedup ON alert_deliveries (sink, dedup_key);
	CREATE TABLE app_state (
		app TEXT PRIMARY KEY,
		last_applied TEXT NOT NULL DEFAULT '',
		last_attempted TEXT NOT NULL DEFAULT '',
		last_attempt_ok INTEGER NOT NULL DEFAULT 0,
		last_success_at INTEGER NOT NULL DEFAULT 0,
		updated_at INTEGER NOT NULL
	);`,
	// 2: per host, the revision it last converged to.
	`CREATE TABLE host_convergence (
		app TEXT NOT NULL,
		host TEXT NOT NULL,
		revision TEXT NOT NULL,
		converged_at INTEGER NOT NULL,
		PRIMARY KEY (app, host)
	);`,
	// 3: a revision that a force-push brought (history rewritten).
	`ALTER TABLE revisions ADD COLUMN rewritten TEXT NOT NULL DEFAULT '';`,
	// 4: the release jobs that succeeded, per revision.
	`CREATE TABLE job_runs (
		app TEXT NOT NULL,
		revision TEXT NOT NULL,
		job TEXT NOT NULL,
		succeeded_at INTEGER NOT NULL,
		PRIMARY KEY (app, revision, job)
	);`,
	// 5: who triggered a pass (a webhook's sender, an API token's name),
	// and whether it was forced through a closed deploy window.
	`ALTER TABLE passes ADD COLUMN triggered_by TEXT NOT NULL DEFAULT '';
	ALTER TABLE passes ADD COLUMN override INTEGER NOT NULL DEFAULT 0;`,
	// 6: versions pulled ahead of their deploy, per host.
	`CREATE TABLE prepulls (
		app TEXT NOT NULL,
		version TEXT NOT NULL,
		host TEXT NOT NULL,
		outcome TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		at INTEGER NOT NULL,
		PRIMARY KEY (app, version, host)
	);`,
}

// Open opens (creating if needed) the store at path and migrates it.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serializes anyway
	s := &Store{db: db}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	_ = os.Chmod(path, 0o600)
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) migrate(ctx context.Context) error {
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this capstan (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion returns the migrated schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

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
