package state

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"
)

// forgetAfterMS is how long a replica not seen, or a claimed hand-over,
// is kept (one day).
const forgetAfterMS = 24 * 60 * 60 * 1000

// Replica is one capstan serve process sharing the database.
type Replica struct {
	ID   string    `json:"id"`
	Addr string    `json:"addr"`
	Seen time.Time `json:"seen"` // by the database's clock
}

// Heartbeat records that replica (reachable at addr) is alive now, by the
// database's clock. Replicas not seen for a day are forgotten.
func (s *Store) Heartbeat(ctx context.Context, replica, addr string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO replicas (id, addr, seen_at) VALUES (?, ?, {now})
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, seen_at = excluded.seen_at`, replica, addr); err != nil {
		return fmt.Errorf("heartbeat of %s: %w", replica, err)
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM replicas WHERE seen_at < {now} - ?`, forgetAfterMS)
	return err
}

// Replicas returns the replicas seen within the last within, by ID.
func (s *Store) Replicas(ctx context.Context, within time.Duration) ([]Replica, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, addr, seen_at FROM replicas WHERE seen_at > {now} - ? ORDER BY id`, within.Milliseconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Replica
	for rows.Next() {
		var r Replica
		var seen int64
		if err := rows.Scan(&r.ID, &r.Addr, &seen); err != nil {
			return nil, err
		}
		r.Seen = fromUnix(seen)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Handoff is a request for an app that one replica received (a webhook,
// an API call) and the replica holding the app's lease carries out.
type Handoff struct {
	ID        int64     `json:"id"`
	App       string    `json:"app"`
	Kind      string    `json:"kind"` // what to do, as the daemon names it
	By        string    `json:"by,omitempty"`
	Force     bool      `json:"force,omitempty"`
	Override  bool      `json:"override,omitempty"`
	RerunJobs bool      `json:"rerun_jobs,omitempty"`
	Created   time.Time `json:"created"` // by the database's clock
}

// EnqueueHandoff queues h for the holder of h.App's lease (h.ID and
// h.Created are set by the store).
func (s *Store) EnqueueHandoff(ctx context.Context, h Handoff) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO handoffs (app, kind, requested_by, force, override, rerun_jobs, created_at)
		VALUES (?, ?, ?, ?, ?, ?, {now})`, h.App, h.Kind, h.By, b2i(h.Force), b2i(h.Override), b2i(h.RerunJobs))
	if err != nil {
		return fmt.Errorf("enqueue %s hand-over for %s: %w", h.Kind, h.App, err)
	}
	return nil
}

// ClaimHandoffs marks app's unclaimed hand-overs claimed and returns
// them, oldest first, in one statement: of replicas claiming at once, each
// hand-over goes to exactly one. Through a Fenced view the claim is made
// only while the lease holds (else ErrLeaseLost), so a replica that lost
// the app cannot take its requests. Hand-overs claimed a day ago are
// dropped.
func (s *Store) ClaimHandoffs(ctx context.Context, app string) ([]Handoff, error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `UPDATE handoffs SET claimed_at = {now} WHERE app = ? AND claimed_at IS NULL
		RETURNING id, app, kind, requested_by, force, override, rerun_jobs, created_at`, app)
	if err != nil {
		return nil, err
	}
	var out []Handoff
	for rows.Next() {
		var h Handoff
		var created int64
		if err := rows.Scan(&h.ID, &h.App, &h.Kind, &h.By, &h.Force, &h.Override, &h.RerunJobs, &created); err != nil {
			rows.Close()
			return nil, err
		}
		h.Created = fromUnix(created)
		out = append(out, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM handoffs WHERE claimed_at < {now} - ?`, forgetAfterMS); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Handoff) int { return cmp.Compare(a.ID, b.ID) })
	return out, tx.Commit()
}

// ClusterID returns the ID that every capstan sharing this store has in
// common, made by the first one that asks. The daemon puts it in Kamal's
// deploy lock, so the replica that takes an app over reclaims a lock that
// its dead predecessor left instead of waiting for it.
func (s *Store) ClusterID(ctx context.Context) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('cluster_id', ?) ON CONFLICT (key) DO NOTHING`, hex.EncodeToString(b)); err != nil {
		return "", fmt.Errorf("cluster ID: %w", err)
	}
	var id string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'cluster_id'`).Scan(&id); err != nil {
		return "", fmt.Errorf("cluster ID: %w", err)
	}
	return id, nil
}
