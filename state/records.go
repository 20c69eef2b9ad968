package state

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Revision is a git commit capstan saw.
type Revision struct {
	App       string    `json:"app"`
	SHA       string    `json:"sha"`
	Author    string    `json:"author"`
	Message   string    `json:"message"`
	Committed time.Time `json:"committed"`
	Seen      time.Time `json:"seen"`
	// Rewritten says how the branch was force-pushed to this revision
	// ("" for a fast-forward), the last time it was seen that way.
	Rewritten string `json:"rewritten,omitempty"`
}

// RecordRevision stores a revision once (later calls keep the first
// sighting, but a rewrite note replaces the one kept).
func (s *Store) RecordRevision(ctx context.Context, r Revision) error {
	if r.Seen.IsZero() {
		r.Seen = time.Now()
	}
	_, err := s.exec(ctx, `INSERT INTO revisions (app, sha, author, message, committed_at, seen_at, rewritten)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app, sha) DO UPDATE SET rewritten = excluded.rewritten WHERE excluded.rewritten != ''`,
		r.App, r.SHA, r.Author, r.Message, unix(r.Committed), unix(r.Seen), r.Rewritten)
	return err
}

// Revision returns one revision.
func (s *Store) Revision(ctx context.Context, app, sha string) (Revision, error) {
	r := Revision{App: app, SHA: sha}
	var c, seen int64
	err := s.db.QueryRowContext(ctx, `SELECT author, message, committed_at, seen_at, rewritten FROM revisions WHERE app = ? AND sha = ?`, app, sha).
		Scan(&r.Author, &r.Message, &c, &seen, &r.Rewritten)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("revision %s of %s: %w", sha, app, ErrNotFound)
	}
	r.Committed, r.Seen = fromUnix(c), fromUnix(seen)
	return r, err
}

// Pass outcomes.
const (
	OutcomeRunning   = "running"
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeNoop      = "noop"
	OutcomeInvalid   = "invalid"     // the revision's config did not validate; no host touched
	OutcomeAbandoned = "interrupted" // the process died mid-pass (found at the next start)
)

// Pass is one reconcile pass of an app.
type Pass struct {
	ID       int64  `json:"id"`
	App      string `json:"app"`
	Revision string `json:"revision"`
	Version  string `json:"version"`
	Trigger  string `json:"trigger"` // poll, webhook, cron, manual, startup, self-heal
	// TriggeredBy is who asked for the pass: a webhook's sender
	// ("github:ada"), an API token's name ("token:ci"); "" for the loop.
	TriggeredBy string `json:"triggered_by,omitempty"`
	// Override: forced through a closed deploy window.
	Override bool      `json:"override,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Outcome  string    `json:"outcome"`
	Error    string    `json:"error,omitempty"`
	Plan     string    `json:"plan,omitempty"` // the plan as text
	Steps    []Step    `json:"steps,omitempty"`
}

// Who says what started the pass and who asked: "webhook by github:ada",
// "manual by token:ops, override".
func (p Pass) Who() string {
	s := p.Trigger
	if p.TriggeredBy != "" {
		s += " by " + p.TriggeredBy
	}
	if p.Override {
		s += ", override"
	}
	return s
}

// Duration is how long the pass took (0 while running).
func (p Pass) Duration() time.Duration {
	if p.Finished.IsZero() {
		return 0
	}
	return p.Finished.Sub(p.Started)
}

// Step is one executed step of a pass on a host.
type Step struct {
	Host     string    `json:"host"`
	Step     string    `json:"step"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Result   string    `json:"result"` // ok, failed
	Error    string    `json:"error,omitempty"`
	Logs     string    `json:"logs,omitempty"`
}

// StartPass records a pass that begins now and returns its ID.
func (s *Store) StartPass(ctx context.Context, p Pass) (int64, error) {
	if p.Started.IsZero() {
		p.Started = time.Now()
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var id int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO passes (app, revision, version, trigger, triggered_by, override, started_at, outcome, plan)
		VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?) RETURNING id`, p.App, p.Revision, p.Version, p.Trigger, p.TriggeredBy, b2i(p.Override), unix(p.Started), p.Plan).Scan(&id); err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

// FinishPass records a pass's outcome and its steps in one transaction.
func (s *Store) FinishPass(ctx context.Context, id int64, outcome, errText, plan string, steps []Step) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, st := range steps {
		if _, err := tx.ExecContext(ctx, `INSERT INTO host_steps (pass_id, host, step, started_at, finished_at, result, error, logs)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, st.Host, st.Step, unix(st.Started), unix(st.Finished), st.Result, st.Error, st.Logs); err != nil {
			return err
		}
	}
	res, err := tx.ExecContext(ctx, `UPDATE passes SET finished_at = ?, outcome = ?, error = ?, plan = CASE WHEN ? = '' THEN plan ELSE ? END WHERE id = ?`,
		unix(time.Now()), outcome, errText, plan, plan, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("pass %d: %w", id, ErrNotFound)
	}
	return tx.Commit()
}

// AbandonedError is the error of a pass marked interrupted.
const AbandonedError = "capstan stopped during this pass"

// AbandonRunning marks passes left "running" by a process that died as
// interrupted; the daemon calls it at start. It returns them as marked
// (without steps), oldest first.
func (s *Store) AbandonRunning(ctx context.Context) ([]Pass, error) {
	return s.abandon(ctx, "")
}

// AbandonRunningApp is AbandonRunning for one app: a replica taking over
// app's lease from one that died marks only that app's passes (through
// its Fenced view, so only while it holds the lease).
func (s *Store) AbandonRunningApp(ctx context.Context, app string) ([]Pass, error) {
	if app == "" {
		return nil, errors.New("abandon running passes: no app named")
	}
	return s.abandon(ctx, app)
}

// abandon marks app's running passes ("" app: every app's).
func (s *Store) abandon(ctx context.Context, app string) ([]Pass, error) {
	now := time.Now()
	tx, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `UPDATE passes SET outcome = ?, finished_at = ?, error = ? WHERE outcome = 'running' AND (? = '' OR app = ?)
		RETURNING id, app, revision, version, trigger, started_at`, OutcomeAbandoned, unix(now), AbandonedError, app, app)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pass
	for rows.Next() {
		p := Pass{Outcome: OutcomeAbandoned, Error: AbandonedError}
		var started int64
		if err := rows.Scan(&p.ID, &p.App, &p.Revision, &p.Version, &p.Trigger, &started); err != nil {
			return nil, err
		}
		p.Started, p.Finished = fromUnix(started), fromUnix(unix(now))
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	slices.SortFunc(out, func(a, b Pass) int { return cmp.Compare(a.ID, b.ID) })
	return out, tx.Commit()
}

// History returns an app's latest passes, newest first, with their steps
// ("" app: every app).
func (s *Store) History(ctx context.Context, app string, limit int) ([]Pass, error) {
	if limit <= 0 {
		limit = 50
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, app, revision, version, trigger, triggered_by, override, started_at, finished_at, outcome, error, plan
		FROM passes WHERE ? = '' OR app = ? ORDER BY id DESC LIMIT ?`, app, app, limit)
	if err != nil {
		return nil, err
	}
	var out []Pass
	for rows.Next() {
		var p Pass
		var started int64
		var finished sql.NullInt64
		if err := rows.Scan(&p.ID, &p.App, &p.Revision, &p.Version, &p.Trigger, &p.TriggeredBy, &p.Override, &started, &finished, &p.Outcome, &p.Error, &p.Plan); err != nil {
			rows.Close()
			return nil, err
		}
		p.Started, p.Finished = fromUnix(started), fromNull(finished)
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		steps, err := s.steps(ctx, out[i].ID)
		if err != nil {
			return nil, err
		}
		out[i].Steps = steps
	}
	return out, nil
}

func (s *Store) steps(ctx context.Context, passID int64) ([]Step, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT host, step, started_at, finished_at, result, error, logs FROM host_steps WHERE pass_id = ? ORDER BY id`, passID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Step
	for rows.Next() {
		var st Step
		var a, b int64
		if err := rows.Scan(&st.Host, &st.Step, &a, &b, &st.Result, &st.Error, &st.Logs); err != nil {
			return nil, err
		}
		st.Started, st.Finished = fromUnix(a), fromUnix(b)
		out = append(out, st)
	}
	return out, rows.Err()
}

// PrunePasses deletes an app's passes beyond the newest keep (their steps
// go with them). It returns how many were deleted.
func (s *Store) PrunePasses(ctx context.Context, keep int) (int64, error) {
	res, err := s.exec(ctx, `DELETE FROM passes WHERE id IN (
		SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY app ORDER BY id DESC) AS n FROM passes) AS ranked WHERE n > ?)`, keep)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// AppState is the loop's memory of an app: the last revision applied
// successfully and the last one attempted, kept apart.
type AppState struct {
	App           string    `json:"app"`
	LastApplied   string    `json:"last_applied"`
	LastAttempted string    `json:"last_attempted"`
	LastAttemptOK bool      `json:"last_attempt_ok"`
	LastSuccess   time.Time `json:"last_success"`
	Updated       time.Time `json:"updated"`
}

// AppState returns an app's state (zero values for a new app).
func (s *Store) AppState(ctx context.Context, app string) (AppState, error) {
	st := AppState{App: app}
	var ok int
	var succ, upd int64
	err := s.db.QueryRowContext(ctx, `SELECT last_applied, last_attempted, last_attempt_ok, last_success_at, updated_at FROM app_state WHERE app = ?`, app).
		Scan(&st.LastApplied, &st.LastAttempted, &ok, &succ, &upd)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	st.LastAttemptOK, st.LastSuccess, st.Updated = ok == 1, fromUnix(succ), fromUnix(upd)
	return st, err
}

// RecordAttempt records that revision was attempted, and whether it
// succeeded (then it is also the last applied one).
func (s *Store) RecordAttempt(ctx context.Context, app, revision string, ok bool) error {
	now := unix(time.Now())
	applied, success := "", int64(0)
	if ok {
		applied, success = revision, now
	}
	_, err := s.exec(ctx, `INSERT INTO app_state (app, last_applied, last_attempted, last_attempt_ok, last_success_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (app) DO UPDATE SET
			last_applied = CASE WHEN excluded.last_attempt_ok = 1 THEN excluded.last_applied ELSE app_state.last_applied END,
			last_attempted = excluded.last_attempted, last_attempt_ok = excluded.last_attempt_ok,
			last_success_at = CASE WHEN excluded.last_attempt_ok = 1 THEN excluded.last_success_at ELSE app_state.last_success_at END,
			updated_at = excluded.updated_at`,
		app, applied, revision, b2i(ok), success, now)
	return err
}
