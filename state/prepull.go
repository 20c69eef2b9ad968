package state

import (
	"context"
	"time"
)

// Prepull is a version of an app pulled onto a host ahead of its deploy.
type Prepull struct {
	App     string    `json:"app"`
	Version string    `json:"version"`
	Host    string    `json:"host"`
	Outcome string    `json:"outcome"` // pulled, present, skipped, failed
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// RecordPrepull records the outcome of a pre-pull of version on a host
// (replacing an earlier one of the same version and host).
func (s *Store) RecordPrepull(ctx context.Context, p Prepull) error {
	if p.At.IsZero() {
		p.At = time.Now()
	}
	_, err := s.exec(ctx, `INSERT INTO prepulls (app, version, host, outcome, reason, at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (app, version, host) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason, at = excluded.at`,
		p.App, p.Version, p.Host, p.Outcome, p.Reason, unix(p.At))
	return err
}

// Prepulls returns an app's pre-pull records, newest version first.
func (s *Store) Prepulls(ctx context.Context, app string) ([]Prepull, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT app, version, host, outcome, reason, at FROM prepulls
		WHERE app = ? ORDER BY at DESC, version, host`, app)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Prepull
	for rows.Next() {
		var p Prepull
		var at int64
		if err := rows.Scan(&p.App, &p.Version, &p.Host, &p.Outcome, &p.Reason, &at); err != nil {
			return nil, err
		}
		p.At = fromUnix(at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// ForgetPrepull drops the records of a version (deployed, or evicted).
func (s *Store) ForgetPrepull(ctx context.Context, app, version string) error {
	_, err := s.exec(ctx, `DELETE FROM prepulls WHERE app = ? AND version = ?`, app, version)
	return err
}
