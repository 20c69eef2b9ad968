package state

import (
	"context"
	"time"
)

// MarkConverged records that hosts of app now run revision: a pass
// converged them (or found them already matching it).
func (s *Store) MarkConverged(ctx context.Context, app, revision string, hosts []string) error {
	if len(hosts) == 0 {
		return nil
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := unix(time.Now())
	for _, h := range hosts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO host_convergence (app, host, revision, converged_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (app, host) DO UPDATE SET revision = excluded.revision, converged_at = excluded.converged_at`,
			app, h, revision, now); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Converged returns, per host of app, the revision it last converged to
// (hosts never converged are absent).
func (s *Store) Converged(ctx context.Context, app string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT host, revision FROM host_convergence WHERE app = ?`, app)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var h, r string
		if err := rows.Scan(&h, &r); err != nil {
			return nil, err
		}
		out[h] = r
	}
	return out, rows.Err()
}
