package state

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// RecordJob records that the release job succeeded for revision of app
// (again: the time is updated).
func (s *Store) RecordJob(ctx context.Context, app, revision, job string) error {
	_, err := s.exec(ctx, `INSERT INTO job_runs (app, revision, job, succeeded_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (app, revision, job) DO UPDATE SET succeeded_at = excluded.succeeded_at`, app, revision, job, unix(time.Now()))
	return err
}

// JobSucceeded reports whether the release job succeeded for revision of
// app.
func (s *Store) JobSucceeded(ctx context.Context, app, revision, job string) (bool, error) {
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT succeeded_at FROM job_runs WHERE app = ? AND revision = ? AND job = ?`, app, revision, job).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
