package state

import (
	"context"
	"fmt"
	"strings"
)

// sqliteMigrations are applied in order; the schema version is PRAGMA
// user_version. Append only: never edit a released migration, and keep
// postgresMigrations in step (same number, same meaning).
var sqliteMigrations = []string{
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
	// 7: what replicas sharing one database coordinate with (on SQLite
	// there is one replica, but the schema is the same).
	`CREATE TABLE leases (
		app TEXT PRIMARY KEY,
		owner TEXT NOT NULL,
		token INTEGER NOT NULL,
		expires_at INTEGER NOT NULL
	);
	CREATE TABLE replicas (
		id TEXT PRIMARY KEY,
		addr TEXT NOT NULL DEFAULT '',
		seen_at INTEGER NOT NULL
	);
	CREATE TABLE handoffs (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		app TEXT NOT NULL,
		kind TEXT NOT NULL,
		requested_by TEXT NOT NULL DEFAULT '',
		force INTEGER NOT NULL DEFAULT 0,
		override INTEGER NOT NULL DEFAULT 0,
		rerun_jobs INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL,
		claimed_at INTEGER
	);
	CREATE INDEX handoffs_app ON handoffs (app, id) WHERE claimed_at IS NULL;`,
	// 8: facts about the store itself (the cluster ID replicas share).
	`CREATE TABLE meta (
		key TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,
}

// postgresMigrations are sqliteMigrations for PostgreSQL: the same numbers
// and meaning, BIGSERIAL ids and BIGINT millisecond times. The schema
// version is the row of schema_version. Append only, in step with
// sqliteMigrations.
var postgresMigrations = []string{
	// 1: the initial schema.
	`CREATE TABLE revisions (
		app TEXT NOT NULL,
		sha TEXT NOT NULL,
		author TEXT NOT NULL DEFAULT '',
		message TEXT NOT NULL DEFAULT '',
		committed_at BIGINT NOT NULL DEFAULT 0,
		seen_at BIGINT NOT NULL,
		PRIMARY KEY (app, sha)
	);
	CREATE TABLE passes (
		id BIGSERIAL PRIMARY KEY,
		app TEXT NOT NULL,
		revision TEXT NOT NULL DEFAULT '',
		version TEXT NOT NULL DEFAULT '',
		trigger TEXT NOT NULL,
		started_at BIGINT NOT NULL,
		finished_at BIGINT,
		outcome TEXT NOT NULL DEFAULT 'running',
		error TEXT NOT NULL DEFAULT '',
		plan TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX passes_app ON passes (app, id);
	CREATE TABLE host_steps (
		id BIGSERIAL PRIMARY KEY,
		pass_id BIGINT NOT NULL REFERENCES passes(id) ON DELETE CASCADE,
		host TEXT NOT NULL,
		step TEXT NOT NULL,
		started_at BIGINT NOT NULL,
		finished_at BIGINT NOT NULL,
		result TEXT NOT NULL,
		error TEXT NOT NULL DEFAULT '',
		logs TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX host_steps_pass ON host_steps (pass_id);
	CREATE TABLE drift_episodes (
		id BIGSERIAL PRIMARY KEY,
		app TEXT NOT NULL,
		host TEXT NOT NULL,
		kind TEXT NOT NULL,
		subject TEXT NOT NULL DEFAULT '',
		detail TEXT NOT NULL,
		opened_at BIGINT NOT NULL,
		resolved_at BIGINT,
		reminded_at BIGINT
	);
	CREATE UNIQUE INDEX drift_open ON drift_episodes (app, host, kind, subject) WHERE resolved_at IS NULL;
	CREATE TABLE alert_deliveries (
		id BIGSERIAL PRIMARY KEY,
		sink TEXT NOT NULL,
		event TEXT NOT NULL,
		app TEXT NOT NULL,
		dedup_key TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		delivered_at BIGINT,
		last_error TEXT NOT NULL DEFAULT '',
		payload TEXT NOT NULL
	);
	CREATE UNIQUE INDEX alert_dedup ON alert_deliveries (sink, dedup_key);
	CREATE TABLE app_state (
		app TEXT PRIMARY KEY,
		last_applied TEXT NOT NULL DEFAULT '',
		last_attempted TEXT NOT NULL DEFAULT '',
		last_attempt_ok INTEGER NOT NULL DEFAULT 0,
		last_success_at BIGINT NOT NULL DEFAULT 0,
		updated_at BIGINT NOT NULL
	);`,
	// 2: per host, the revision it last converged to.
	`CREATE TABLE host_convergence (
		app TEXT NOT NULL,
		host TEXT NOT NULL,
		revision TEXT NOT NULL,
		converged_at BIGINT NOT NULL,
		PRIMARY KEY (app, host)
	);`,
	// 3: a revision that a force-push brought (history rewritten).
	`ALTER TABLE revisions ADD COLUMN rewritten TEXT NOT NULL DEFAULT '';`,
	// 4: the release jobs that succeeded, per revision.
	`CREATE TABLE job_runs (
		app TEXT NOT NULL,
		revision TEXT NOT NULL,
		job TEXT NOT NULL,
		succeeded_at BIGINT NOT NULL,
		PRIMARY KEY (app, revision, job)
	);`,
	// 5: who triggered a pass, and whether it was forced through a closed
	// deploy window.
	`ALTER TABLE passes ADD COLUMN triggered_by TEXT NOT NULL DEFAULT '';
	ALTER TABLE passes ADD COLUMN override INTEGER NOT NULL DEFAULT 0;`,
	// 6: versions pulled ahead of their deploy, per host.
	`CREATE TABLE prepulls (
		app TEXT NOT NULL,
		version TEXT NOT NULL,
		host TEXT NOT NULL,
		outcome TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		at BIGINT NOT NULL,
		PRIMARY KEY (app, version, host)
	);`,
	// 7: leases (one replica reconciles an app at a time, fenced by
	// token), replica heartbeats, and the queue that hands a request to
	// the replica holding the app's lease.
	`CREATE TABLE leases (
		app TEXT PRIMARY KEY,
		owner TEXT NOT NULL,
		token BIGINT NOT NULL,
		expires_at BIGINT NOT NULL
	);
	CREATE TABLE replicas (
		id TEXT PRIMARY KEY,
		addr TEXT NOT NULL DEFAULT '',
		seen_at BIGINT NOT NULL
	);
	CREATE TABLE handoffs (
		id BIGSERIAL PRIMARY KEY,
		app TEXT NOT NULL,
		kind TEXT NOT NULL,
		requested_by TEXT NOT NULL DEFAULT '',
		force INTEGER NOT NULL DEFAULT 0,
		override INTEGER NOT NULL DEFAULT 0,
		rerun_jobs INTEGER NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		claimed_at BIGINT
	);
	CREATE INDEX handoffs_app ON handoffs (app, id) WHERE claimed_at IS NULL;`,
	// 8: facts about the store itself (the cluster ID replicas share).
	`CREATE TABLE meta (
		key TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,
}

// schemaLock is the pg_advisory_xact_lock key migrations run under, so
// replicas starting at once migrate one after the other.
const schemaLock = 0x63617073746e // "capstn"

// migrate brings the schema to the newest version of s's dialect.
func (s *Store) migrate(ctx context.Context) error {
	return s.migrateTo(ctx, len(s.db.d.migrations))
}

// migrateTo brings the schema up to version to (tests stop short of the
// newest to check an upgrade).
func (s *Store) migrateTo(ctx context.Context, to int) error {
	if s.db.d.dollar {
		return s.migratePostgres(ctx, to)
	}
	return s.migrateSQLite(ctx, to)
}

func (s *Store) migrateSQLite(ctx context.Context, to int) error {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if err := newer(v, sqliteMigrations); err != nil {
		return err
	}
	for i := v; i < to; i++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, sqliteMigrations[i]); err != nil {
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

// migratePostgres applies the pending migrations in one transaction under
// the schema lock: a second replica waits, then finds nothing to do.
func (s *Store) migratePostgres(ctx context.Context, to int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(schemaLock)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
		return err
	}
	if err := newer(v, postgresMigrations); err != nil {
		return err
	}
	if v >= to {
		return nil
	}
	for i := v; i < to; i++ {
		for _, stmt := range strings.Split(postgresMigrations[i], ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, to); err != nil {
		return err
	}
	return tx.Commit()
}

// newer refuses a schema this binary does not know.
func newer(v int, list []string) error {
	if v > len(list) {
		return fmt.Errorf("schema version %d is newer than this capstan (%d)", v, len(list))
	}
	return nil
}

// SchemaVersion returns the migrated schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	q := "PRAGMA user_version"
	if s.db.d.dollar {
		q = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
	}
	var v int
	err := s.db.QueryRowContext(ctx, q).Scan(&v)
	return v, err
}
