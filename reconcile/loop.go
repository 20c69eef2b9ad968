package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Revision is one commit of an app's repository, checked out in Dir.
type Revision struct {
	SHA     string
	Author  string
	Message string
	Time    time.Time
	Dir     string
}

// Source follows an app's repository. Sync fetches only when the remote
// head moved and returns the current revision and whether it changed.
type Source interface {
	Sync(ctx context.Context) (Revision, bool, error)
}

// Loader turns a checked-out revision into an App ready to plan. An invalid
// configuration returns an error whose text lists every problem.
type Loader func(ctx context.Context, rev Revision) (*App, error)

// ImageCheck waits until image exists in its registry and returns its
// digest; it gives up with an error after its own timeout.
type ImageCheck func(ctx context.Context, app *App) (digest string, err error)

// PassStep is one step of a pass as it is recorded.
type PassStep struct {
	Host, Step, Result, Error, Logs string
	Started, Finished               time.Time
}

// Recorder keeps the loop's memory and history (the state store, adapted by
// cmd/capstan). All methods must be safe for concurrent use.
type Recorder interface {
	RecordRevision(ctx context.Context, app string, rev Revision) error
	StartPass(ctx context.Context, app, revision, version, trigger string) (int64, error)
	FinishPass(ctx context.Context, id int64, outcome, errText, plan string, steps []PassStep) error
	// LastAttempt returns the last revision attempted and whether that
	// attempt failed for a reason a retry of the same revision cannot fix.
	LastAttempt(ctx context.Context, app string) (revision string, failed bool, err error)
	RecordAttempt(ctx context.Context, app, revision string, failed bool) error
	// SyncDrift records the drift a sweep saw on the observed hosts and
	// returns the episodes it opened and resolved.
	SyncDrift(ctx context.Context, app string, observed []string, items []Drift) (opened, resolved []Drift, err error)
}

// Event is what the loop tells people about.
type Event struct {
	Kind     string    `json:"event"` // deploy_succeeded, deploy_failed, drift_opened, drift_resolved, git_unreachable, git_recovered
	App      string    `json:"app"`
	Host     string    `json:"host,omitempty"`
	Revision string    `json:"revision,omitempty"`
	Version  string    `json:"version,omitempty"`
	Drift    string    `json:"kind,omitempty"`
	Detail   string    `json:"detail"`
	Time     time.Time `json:"time"`
}

// Notifier delivers events; it must not block the loop.
type Notifier interface {
	Notify(Event)
}

// Pass outcomes.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomePartial   = "partial" // some hosts unreachable; retried next pass
	OutcomeNoop      = "noop"
	OutcomeInvalid   = "invalid"
)

// Triggers of a pass.
const (
	TriggerPoll    = "poll"
	TriggerWebhook = "webhook"
	TriggerManual  = "manual"
	TriggerCron    = "cron"
	TriggerStartup = "startup"
)

// Loop runs one app forever: follow git, deploy each new revision once,
// sweep for drift on a schedule, heal it when allowed. One pass at a time.
type Loop struct {
	Name     string
	Source   Source
	Load     Loader
	Image    ImageCheck // nil: no registry check
	Record   Recorder
	Notify   Notifier
	Log      *slog.Logger
	Poll     time.Duration // default 60 s, with ±10 % jitter
	SelfHeal func(*App) bool
	// Sweep returns the delay until the next drift sweep (a cron
	// schedule); nil disables sweeps.
	Sweep func(now time.Time) time.Time
	// GitAlertAfter is how many consecutive git failures raise an alert.
	GitAlertAfter int
	// OnPass, when set, learns each applied pass's outcome and duration
	// (metrics).
	OnPass func(outcome string, took time.Duration)

	wake     chan trigger
	mu       sync.Mutex
	status   LoopStatus
	lastGood *App
	// loaded is the App of loadedRev, reused while the revision does not
	// change: polls then keep its SSH channels, observed homes and booted
	// proxy driver instead of loading everything again.
	loaded    *App
	loadedRev string
}

type trigger struct {
	kind  string
	force bool
}

// LoopStatus is what the loop reports about itself.
type LoopStatus struct {
	App         string    `json:"app"`
	Revision    string    `json:"revision"`
	Version     string    `json:"version"`
	LastPass    time.Time `json:"last_pass"`
	LastOutcome string    `json:"last_outcome"`
	LastError   string    `json:"last_error,omitempty"`
	LastSuccess time.Time `json:"last_success"`
	GitErrors   int       `json:"git_errors"`
	Running     bool      `json:"running"`
	Hosts       []string  `json:"hosts"`
	Drift       []Drift   `json:"drift"`
}

// Status returns a snapshot of the loop's state.
func (l *Loop) Status() LoopStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.App = l.Name
	s.Drift = append([]Drift(nil), l.status.Drift...)
	return s
}

func (l *Loop) init() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan trigger, 1)
	}
	if l.Log == nil {
		l.Log = slog.New(slog.DiscardHandler)
	}
	if l.Poll <= 0 {
		l.Poll = 60 * time.Second
	}
	if l.GitAlertAfter <= 0 {
		l.GitAlertAfter = 3
	}
}

// Trigger asks for a pass soon. Bursts coalesce into one pass; force
// retries a revision that failed.
func (l *Loop) Trigger(kind string, force bool) {
	l.init()
	select {
	case l.wake <- trigger{kind: kind, force: force}:
	default:
		if force { // make sure a forced request is not lost behind a plain one
			select {
			case <-l.wake:
			default:
			}
			select {
			case l.wake <- trigger{kind: kind, force: true}:
			default:
			}
		}
	}
}

// Run runs the loop until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	l.init()
	log := l.Log.With("app", l.Name)
	gitFailures := 0
	nextPoll := time.Now()
	var nextSweep time.Time
	if l.Sweep != nil {
		nextSweep = l.Sweep(time.Now())
	}
	tr := trigger{kind: TriggerStartup}
	for {
		wait := time.Until(nextPoll)
		sweep := false
		if l.Sweep != nil && nextSweep.Before(nextPoll) {
			wait = time.Until(nextSweep)
		}
		if tr.kind == "" {
			timer := time.NewTimer(max(wait, 0))
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case tr = <-l.wake:
				timer.Stop()
			case <-timer.C:
				if l.Sweep != nil && !time.Now().Before(nextSweep) {
					sweep = true
					tr = trigger{kind: TriggerCron}
				} else {
					tr = trigger{kind: TriggerPoll}
				}
			}
		}
		if sweep {
			l.sweep(ctx, log)
			nextSweep = l.Sweep(time.Now())
			tr = trigger{}
			continue
		}
		err := l.syncOnce(ctx, log, tr)
		tr = trigger{}
		if errors.Is(err, errGit) {
			gitFailures++
			l.setGitErrors(gitFailures)
			backoff := min(l.Poll, time.Duration(1<<min(gitFailures, 6))*time.Second)
			nextPoll = time.Now().Add(jitter(backoff))
			if gitFailures == l.GitAlertAfter {
				l.notify(Event{Kind: "git_unreachable", App: l.Name, Detail: err.Error()})
			}
			log.Warn("git sync failed", "err", err, "failures", gitFailures, "retry_in", time.Until(nextPoll).Round(time.Second))
			continue
		}
		if gitFailures > 0 {
			if gitFailures >= l.GitAlertAfter {
				l.notify(Event{Kind: "git_recovered", App: l.Name, Detail: fmt.Sprintf("git reachable again after %d failures", gitFailures)})
			}
			log.Info("git sync recovered", "after_failures", gitFailures)
			gitFailures = 0
			l.setGitErrors(0)
		}
		nextPoll = time.Now().Add(jitter(l.Poll))
	}
}

var errGit = errors.New("git")

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

func (l *Loop) setGitErrors(n int) {
	l.mu.Lock()
	l.status.GitErrors = n
	l.mu.Unlock()
}

func (l *Loop) notify(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if l.Notify != nil {
		l.Notify.Notify(e)
	}
}

// SyncNow runs one sync pass synchronously (tests and `capstan sync`).
func (l *Loop) SyncNow(ctx context.Context, kind string, force bool) error {
	l.init()
	return l.syncOnce(ctx, l.Log.With("app", l.Name), trigger{kind: kind, force: force})
}

// syncOnce: fetch, and apply the head revision unless it was attempted.
func (l *Loop) syncOnce(ctx context.Context, log *slog.Logger, tr trigger) error {
	if tr.kind != TriggerPoll {
		log.Info("pass started", "trigger", tr.kind, "force", tr.force)
	}
	rev, changed, err := l.Source.Sync(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errGit, err)
	}
	log = log.With("rev", short(rev.SHA))
	if changed {
		if err := l.Record.RecordRevision(ctx, l.Name, rev); err != nil {
			log.Error("record revision", "err", err)
		}
		log.Info("new revision", "author", rev.Author, "message", firstLine(rev.Message))
	}
	last, lastFailed, err := l.Record.LastAttempt(ctx, l.Name)
	if err != nil {
		return err
	}
	if last == rev.SHA && !tr.force {
		if lastFailed {
			log.Debug("revision failed before; waiting for a new commit or a forced sync")
			return nil
		}
		// Applied already: a pass converges hosts that were unreachable.
		return l.pass(ctx, log, rev, tr.kind, true)
	}
	return l.pass(ctx, log, rev, tr.kind, false)
}

// pass loads, checks the image, plans and applies one revision.
func (l *Loop) pass(ctx context.Context, log *slog.Logger, rev Revision, kind string, quietNoop bool) error {
	l.setRunning(true)
	defer l.setRunning(false)
	app, err := l.load(ctx, rev)
	if err != nil {
		id, _ := l.Record.StartPass(ctx, l.Name, rev.SHA, "", kind)
		_ = l.Record.FinishPass(ctx, id, OutcomeInvalid, err.Error(), "", nil)
		_ = l.Record.RecordAttempt(ctx, l.Name, rev.SHA, true)
		l.finish(rev, "", OutcomeInvalid, err.Error())
		l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: rev.SHA, Detail: "invalid configuration: " + err.Error()})
		log.Error("configuration invalid; no host touched", "err", err)
		return nil
	}
	version := app.Config.Version.Name()
	log.Debug("observing hosts", "version", version)
	plan, err := app.Plan(ctx)
	if err != nil {
		return err
	}
	l.setHosts(plan)
	if plan.Empty() {
		if !quietNoop {
			id, _ := l.Record.StartPass(ctx, l.Name, rev.SHA, version, kind)
			_ = l.Record.FinishPass(ctx, id, OutcomeNoop, "", planText(plan), nil)
		}
		failed := len(plan.Unreachable()) > 0
		_ = l.Record.RecordAttempt(ctx, l.Name, rev.SHA, false)
		l.setLastGood(app, !failed)
		l.finish(rev, version, OutcomeNoop, "")
		return nil
	}
	if l.Image != nil {
		digest, err := l.Image(ctx, app)
		if err != nil {
			id, _ := l.Record.StartPass(ctx, l.Name, rev.SHA, version, kind)
			_ = l.Record.FinishPass(ctx, id, OutcomeFailed, err.Error(), planText(plan), nil)
			_ = l.Record.RecordAttempt(ctx, l.Name, rev.SHA, true)
			l.finish(rev, version, OutcomeFailed, err.Error())
			l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: rev.SHA, Version: version, Detail: err.Error()})
			return nil
		}
		app.ImageDigest = digest
		log.Info("image ready", "image", app.Config.Image(), "digest", digest)
	}
	id, err := l.Record.StartPass(ctx, l.Name, rev.SHA, version, kind)
	if err != nil {
		return err
	}
	log.Info("applying", "version", version, "trigger", kind)
	res, applyErr := app.Apply(ctx, plan)
	outcome, failed := classifyResult(res, applyErr)
	errText := ""
	if applyErr != nil {
		errText = applyErr.Error()
	}
	if l.OnPass != nil && res != nil {
		l.OnPass(outcome, res.Finished.Sub(res.Started))
	}
	// Recording must survive a cancelled ctx (SIGTERM mid-pass).
	rctx := context.WithoutCancel(ctx)
	_ = l.Record.FinishPass(rctx, id, outcome, errText, planText(plan), passSteps(res))
	_ = l.Record.RecordAttempt(rctx, l.Name, rev.SHA, failed)
	l.finish(rev, version, outcome, errText)
	switch outcome {
	case OutcomeSucceeded:
		l.setLastGood(app, true)
		l.notify(Event{Kind: "deploy_succeeded", App: l.Name, Revision: rev.SHA, Version: version, Detail: "all hosts run " + version})
		log.Info("deployed", "version", version, "took", res.Finished.Sub(res.Started).Round(time.Millisecond))
	case OutcomePartial:
		l.setLastGood(app, true)
		log.Warn("deployed with unreachable hosts; converging them next pass", "err", applyErr)
	default:
		l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: rev.SHA, Version: version, Detail: errText})
		log.Error("deploy failed", "version", version, "err", applyErr)
	}
	return nil
}

// load returns the App of rev, loading it only when rev changed.
func (l *Loop) load(ctx context.Context, rev Revision) (*App, error) {
	l.mu.Lock()
	app, sha := l.loaded, l.loadedRev
	l.mu.Unlock()
	if app != nil && sha == rev.SHA {
		return app, nil
	}
	app, err := l.Load(ctx, rev)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.loaded, l.loadedRev = app, rev.SHA
	l.mu.Unlock()
	return app, nil
}

// classifyResult: a failed health check, a bad image or a barrier is a bad
// release (not retried for the same revision); other host errors are a
// partial result retried on the next pass.
func classifyResult(res *Result, err error) (outcome string, failed bool) {
	if err == nil {
		return OutcomeSucceeded, false
	}
	if errors.Is(err, ErrUnhealthy) || errors.Is(err, ErrPull) || errors.Is(err, ErrBarrier) || errors.Is(err, ErrRolledBack) || errors.Is(err, ErrLocked) {
		return OutcomeFailed, true
	}
	return OutcomePartial, false
}

func passSteps(res *Result) []PassStep {
	if res == nil {
		return nil
	}
	var out []PassStep
	for _, h := range res.Hosts {
		for _, s := range h.Steps {
			ps := PassStep{Host: h.Host, Step: s.Step.String(), Result: "ok", Error: s.Error, Logs: s.Logs, Started: s.Start, Finished: s.End}
			if s.Error != "" {
				ps.Result = "failed"
			}
			out = append(out, ps)
		}
		if h.Error != "" && len(h.Steps) == 0 {
			out = append(out, PassStep{Host: h.Host, Step: "host", Result: "failed", Error: h.Error, Started: res.Started, Finished: res.Finished})
		}
	}
	return out
}

func planText(p *Plan) string {
	var b strings.Builder
	p.WriteText(&b)
	return b.String()
}

// sweep observes the hosts of the last applied revision, records drift
// episodes (alerting on open and resolve) and heals when allowed.
func (l *Loop) sweep(ctx context.Context, log *slog.Logger) {
	l.mu.Lock()
	app := l.lastGood
	l.mu.Unlock()
	if app == nil {
		log.Debug("drift sweep skipped: nothing applied yet")
		return
	}
	plan, err := app.Plan(ctx)
	if err != nil {
		log.Warn("drift sweep", "err", err)
		return
	}
	l.setHosts(plan)
	var observed []string
	for _, h := range plan.Hosts {
		if h.Error == "" {
			observed = append(observed, h.Host)
		}
	}
	drift := plan.Drift()
	opened, resolved, err := l.Record.SyncDrift(ctx, l.Name, observed, drift)
	if err != nil {
		log.Error("record drift", "err", err)
	}
	rev := l.Status().Revision
	for _, d := range opened {
		l.notify(Event{Kind: "drift_opened", App: l.Name, Host: d.Host, Revision: rev, Drift: string(d.Kind), Detail: d.Detail})
	}
	for _, d := range resolved {
		l.notify(Event{Kind: "drift_resolved", App: l.Name, Host: d.Host, Revision: rev, Drift: string(d.Kind), Detail: d.Detail})
	}
	if len(drift) > 0 {
		log.Warn("drift", "items", len(drift))
	}
	if plan.Empty() || l.SelfHeal == nil || !l.SelfHeal(app) {
		return
	}
	log.Info("self-heal: converging drifted hosts")
	id, _ := l.Record.StartPass(ctx, l.Name, rev, app.Config.Version.Name(), "self-heal")
	res, applyErr := app.Apply(ctx, plan)
	outcome, _ := classifyResult(res, applyErr)
	errText := ""
	if applyErr != nil {
		errText = applyErr.Error()
	}
	_ = l.Record.FinishPass(context.WithoutCancel(ctx), id, outcome, errText, planText(plan), passSteps(res))
}

func (l *Loop) setRunning(b bool) {
	l.mu.Lock()
	l.status.Running = b
	l.mu.Unlock()
}

func (l *Loop) setHosts(p *Plan) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.Hosts = nil
	for _, h := range p.Hosts {
		l.status.Hosts = append(l.status.Hosts, h.Host)
	}
	l.status.Drift = p.Drift()
}

func (l *Loop) setLastGood(app *App, ok bool) {
	if !ok {
		return
	}
	l.mu.Lock()
	l.lastGood = app
	l.mu.Unlock()
}

func (l *Loop) finish(rev Revision, version, outcome, errText string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.Revision, l.status.Version = rev.SHA, version
	l.status.LastPass, l.status.LastOutcome, l.status.LastError = time.Now(), outcome, errText
	if outcome == OutcomeSucceeded || outcome == OutcomeNoop || outcome == OutcomePartial {
		l.status.LastSuccess = time.Now()
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
