package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrLeaseLost is returned when a lease is no longer held by its owner
// with its token: it expired, or another replica took it over.
var ErrLeaseLost = errors.New("lease lost")

// Lease is one replica's right to reconcile one app until Expires. Token
// grows by one each time the lease changes hands, so writes made under an
// older token can be refused (fencing).
type Lease struct {
	App   string `json:"app"`
	Owner string `json:"owner"`
	Token int64  `json:"token"`
	// Expires is by the database's clock (PostgreSQL's, not a replica's;
	// the process's own on SQLite).
	Expires time.Time `json:"expires"`
}

// AcquireLease takes app's lease for owner when it is free, expired, or
// already owner's (then it is renewed and keeps its token); a takeover
// from another owner (or after a release) increments the token. ok is
// false, with no error, while another owner holds an unexpired lease.
// Exactly one of several owners acquiring at once gets it.
func (s *Store) AcquireLease(ctx context.Context, app, owner string, ttl time.Duration) (l Lease, ok bool, err error) {
	if owner == "" || ttl <= 0 {
		return Lease{}, false, fmt.Errorf("acquire lease of %s: owner %q and ttl %v must be set", app, owner, ttl)
	}
	var exp int64
	l = Lease{App: app}
	err = s.db.QueryRowContext(ctx, `INSERT INTO leases (app, owner, token, expires_at) VALUES (?, ?, 1, {now} + ?)
		ON CONFLICT (app) DO UPDATE SET
			token = CASE WHEN leases.owner = excluded.owner THEN leases.token ELSE leases.token + 1 END,
			owner = excluded.owner, expires_at = excluded.expires_at
		WHERE leases.owner = excluded.owner OR leases.expires_at <= {now}
		RETURNING owner, token, expires_at`, app, owner, ttl.Milliseconds()).Scan(&l.Owner, &l.Token, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease of %s: %w", app, err)
	}
	l.Expires = fromUnix(exp)
	return l, true, nil
}

// RenewLease extends l to ttl from now if its owner and token still hold
// it and it has not expired; otherwise it returns ErrLeaseLost (the
// caller stops reconciling the app, and may try AcquireLease again).
func (s *Store) RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	var exp int64
	err := s.db.QueryRowContext(ctx, `UPDATE leases SET expires_at = {now} + ?
		WHERE app = ? AND owner = ? AND token = ? AND expires_at > {now} RETURNING expires_at`,
		ttl.Milliseconds(), l.App, l.Owner, l.Token).Scan(&exp)
	if errors.Is(err, sql.ErrNoRows) {
		return l, fmt.Errorf("renew lease of %s (token %d): %w", l.App, l.Token, ErrLeaseLost)
	}
	if err != nil {
		return l, fmt.Errorf("renew lease of %s: %w", l.App, err)
	}
	l.Expires = fromUnix(exp)
	return l, nil
}

// ReleaseLease frees l at once if it is still held with its token, so
// another replica need not wait for it to expire; a lease already lost is
// left alone (no error).
func (s *Store) ReleaseLease(ctx context.Context, l Lease) error {
	_, err := s.db.ExecContext(ctx, `UPDATE leases SET owner = '', expires_at = 0 WHERE app = ? AND owner = ? AND token = ?`,
		l.App, l.Owner, l.Token)
	if err != nil {
		return fmt.Errorf("release lease of %s: %w", l.App, err)
	}
	return nil
}

// Leases returns the leases held now (unexpired), by app.
func (s *Store) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT app, owner, token, expires_at FROM leases
		WHERE owner != '' AND expires_at > {now} ORDER BY app`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		var exp int64
		if err := rows.Scan(&l.App, &l.Owner, &l.Token, &exp); err != nil {
			return nil, err
		}
		l.Expires = fromUnix(exp)
		out = append(out, l)
	}
	return out, rows.Err()
}

// Fenced returns a view of s whose writes (passes, steps, convergence,
// job runs, drift, app state, revisions, deliveries, pre-pulls, claimed
// hand-overs) commit only while l, by owner and token, is still the
// unexpired holder of its app's lease: each write's transaction checks it
// first, and on PostgreSQL keeps the lease row share-locked until it
// commits, so a takeover waits for a write under way and every later
// write fails. A refused write returns ErrLeaseLost and changes nothing.
// Reads, and the lease, heartbeat and enqueue methods, pass through. The
// view shares s's connections: close s, not the view.
func (s *Store) Fenced(l Lease) *Store {
	return &Store{db: s.db, fence: &l}
}

// begin starts a write transaction; in a Fenced view it first checks the
// lease inside it.
func (s *Store) begin(ctx context.Context) (*txn, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if s.fence == nil {
		return tx, nil
	}
	l := s.fence
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM leases WHERE app = ? AND owner = ? AND token = ? AND expires_at > {now}`+s.db.d.forShare,
		l.App, l.Owner, l.Token).Scan(&one)
	if err != nil {
		tx.Rollback()
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("write for %s under token %d: %w", l.App, l.Token, ErrLeaseLost)
		}
		return nil, err
	}
	return tx, nil
}

// exec runs one write statement (fenced in a Fenced view).
func (s *Store) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if s.fence == nil {
		return s.db.ExecContext(ctx, q, args...)
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return res, tx.Commit()
}
