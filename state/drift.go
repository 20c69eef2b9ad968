package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Episode is one stretch of time a host differed from git in one way.
type Episode struct {
	ID       int64     `json:"id"`
	App      string    `json:"app"`
	Host     string    `json:"host"`
	Kind     string    `json:"kind"`
	Subject  string    `json:"subject,omitempty"` // role or container it concerns
	Detail   string    `json:"detail"`
	Opened   time.Time `json:"opened"`
	Resolved time.Time `json:"resolved,omitzero"`
	Reminded time.Time `json:"reminded,omitzero"`
}

// DriftItem is one drift observed now.
type DriftItem struct {
	Host, Kind, Subject, Detail string
}

// Scope says which open episodes of a host an observation speaks for: all
// of them (Kinds nil), or only those of the listed kinds (a host reached
// but not compared with git speaks only for its "unreachable" episode).
type Scope struct {
	Host  string
	Kinds []string
}

// SyncDrift makes the open episodes of app match what was observed now:
// new items open episodes (on any host), and open episodes within scope
// that are no longer among items resolve. Episodes out of scope (hosts not
// observed) are kept. It returns the episodes opened and resolved by this
// call, in one transaction, so each is announced exactly once.
func (s *Store) SyncDrift(ctx context.Context, app string, scope []Scope, items []DriftItem) (opened, resolved []Episode, err error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback()
	now := time.Now()
	seen := map[[3]string]bool{}
	for _, it := range items {
		key := [3]string{it.Host, it.Kind, it.Subject}
		if seen[key] {
			continue
		}
		seen[key] = true
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO drift_episodes (app, host, kind, subject, detail, opened_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app, host, kind, subject) WHERE resolved_at IS NULL DO NOTHING RETURNING id`,
			app, it.Host, it.Kind, it.Subject, it.Detail, unix(now)).Scan(&id)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, nil, err
		}
		if err == nil { // inserted: a new episode
			opened = append(opened, Episode{ID: id, App: app, Host: it.Host, Kind: it.Kind, Subject: it.Subject, Detail: it.Detail, Opened: fromUnix(unix(now))})
		}
	}
	inScope := func(e Episode) bool {
		for _, sc := range scope {
			if sc.Host == e.Host && (sc.Kinds == nil || slices.Contains(sc.Kinds, e.Kind)) {
				return true
			}
		}
		return false
	}
	open, err := openEpisodes(ctx, tx, app)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range open {
		if !inScope(e) || seen[[3]string{e.Host, e.Kind, e.Subject}] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE drift_episodes SET resolved_at = ? WHERE id = ?`, unix(now), e.ID); err != nil {
			return nil, nil, err
		}
		e.Resolved = fromUnix(unix(now))
		resolved = append(resolved, e)
	}
	return opened, resolved, tx.Commit()
}

func openEpisodes(ctx context.Context, q querier, app string) ([]Episode, error) {
	return episodes(ctx, q, `SELECT id, app, host, kind, subject, detail, opened_at, resolved_at, reminded_at FROM drift_episodes
		WHERE resolved_at IS NULL AND (? = '' OR app = ?) ORDER BY id`, app, app)
}

func episodes(ctx context.Context, q querier, query string, args ...any) ([]Episode, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Episode
	for rows.Next() {
		var e Episode
		var opened int64
		var resolved, reminded sql.NullInt64
		if err := rows.Scan(&e.ID, &e.App, &e.Host, &e.Kind, &e.Subject, &e.Detail, &opened, &resolved, &reminded); err != nil {
			return nil, err
		}
		e.Opened, e.Resolved, e.Reminded = fromUnix(opened), fromNull(resolved), fromNull(reminded)
		out = append(out, e)
	}
	return out, rows.Err()
}

// OpenDrift returns the open episodes of app ("" = all apps).
func (s *Store) OpenDrift(ctx context.Context, app string) ([]Episode, error) {
	return openEpisodes(ctx, s.db, app)
}

// DriftHistory returns an app's latest episodes, open and resolved.
func (s *Store) DriftHistory(ctx context.Context, app string, limit int) ([]Episode, error) {
	if limit <= 0 {
		limit = 100
	}
	return episodes(ctx, s.db, `SELECT id, app, host, kind, subject, detail, opened_at, resolved_at, reminded_at FROM drift_episodes
		WHERE ? = '' OR app = ? ORDER BY id DESC LIMIT ?`, app, app, limit)
}

// DueReminders returns open episodes not announced for at least every,
// and marks them reminded now.
func (s *Store) DueReminders(ctx context.Context, every time.Duration) ([]Episode, error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	cut := unix(time.Now().Add(-every))
	due, err := episodes(ctx, tx, `SELECT id, app, host, kind, subject, detail, opened_at, resolved_at, reminded_at FROM drift_episodes
		WHERE resolved_at IS NULL AND COALESCE(reminded_at, opened_at) <= ? ORDER BY id`, cut)
	if err != nil {
		return nil, err
	}
	for _, e := range due {
		if _, err := tx.ExecContext(ctx, `UPDATE drift_episodes SET reminded_at = ? WHERE id = ?`, unix(time.Now()), e.ID); err != nil {
			return nil, err
		}
	}
	return due, tx.Commit()
}

// RecordDelivery stores one alert delivery outcome (payload must hold no
// secret).
func (s *Store) RecordDelivery(ctx context.Context, sink, event, app, payload string, attempts int, deliveryErr error) error {
	errText := ""
	var delivered any
	if deliveryErr != nil {
		errText = deliveryErr.Error()
	} else {
		delivered = unix(time.Now())
	}
	now := time.Now()
	key := fmt.Sprintf("%s/%d", event, now.UnixNano())
	_, err := s.exec(ctx, `INSERT INTO alert_deliveries (sink, event, app, dedup_key, created_at, attempts, delivered_at, last_error, payload)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, sink, event, app, key, unix(now), attempts, delivered, errText, payload)
	return err
}

// Delivery is one recorded alert delivery.
type Delivery struct {
	Sink, Event, App, Error, Payload string
	Attempts                         int
	Delivered                        bool
}

// Deliveries returns the latest alert deliveries, newest first.
func (s *Store) Deliveries(ctx context.Context, limit int) ([]Delivery, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, event, app, last_error, payload, attempts, delivered_at IS NOT NULL FROM alert_deliveries ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		var d Delivery
		if err := rows.Scan(&d.Sink, &d.Event, &d.App, &d.Error, &d.Payload, &d.Attempts, &d.Delivered); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
