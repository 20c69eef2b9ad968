package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	// Rewritten, when the branch was force-pushed to this revision, says
	// how (one line naming both commits); "" for a fast-forward.
	Rewritten string
}

// Source follows an app's repository. Sync fetches only when the remote
// head moved and returns the current revision and whether it changed. An
// error wrapping ErrPermanent is one a retry cannot fix (the remote
// refused the credentials): it is alerted at once and retried only at the
// poll interval.
type Source interface {
	Sync(ctx context.Context) (Revision, bool, error)
}

// Loader turns a checked-out revision into an App ready to plan. An invalid
// configuration returns an error whose text lists every problem.
type Loader func(ctx context.Context, rev Revision) (*App, error)

// ImageCheck waits until the app's image exists in its registry and
// returns its digest. While the tag is not there yet it calls waiting with
// the reason and keeps waiting, up to its own timeout; an error waiting
// cannot fix (plain HTTP, TLS, 401/403, DNS) returns at once. Either error
// fails the pass; the next poll tries again.
type ImageCheck func(ctx context.Context, app *App, waiting func(reason string)) (digest string, err error)

// PassStep is one step of a pass as it is recorded.
type PassStep struct {
	Host, Step, Result, Error, Logs string
	Started, Finished               time.Time
}

// Recorder keeps the loop's memory and history (the state store, adapted by
// internal/daemon). All methods must be safe for concurrent use.
type Recorder interface {
	RecordRevision(ctx context.Context, app string, rev Revision) error
	StartPass(ctx context.Context, app, revision, version string, by Request) (int64, error)
	FinishPass(ctx context.Context, id int64, outcome, errText, plan string, steps []PassStep) error
	// LastAttempt returns the last revision attempted and whether that
	// attempt failed for a reason a retry of the same revision cannot fix.
	LastAttempt(ctx context.Context, app string) (revision string, failed bool, err error)
	RecordAttempt(ctx context.Context, app, revision string, failed bool) error
	// SyncDrift records the drift seen now: items open episodes, and open
	// episodes within scope that are not among items resolve. It returns
	// the episodes it opened and resolved.
	SyncDrift(ctx context.Context, app string, scope []DriftScope, items []Drift) (opened, resolved []Drift, err error)
	// Converged returns, per host, the revision it last converged to.
	Converged(ctx context.Context, app string) (map[string]string, error)
	// MarkConverged records that hosts now run revision.
	MarkConverged(ctx context.Context, app, revision string, hosts []string) error
}

// DriftScope is what an observation of Host speaks for: every kind of
// drift (Kinds nil) or only the listed kinds.
type DriftScope struct {
	Host  string
	Kinds []DriftKind
}

// Event is what the loop tells people about.
type Event struct {
	Kind     string    `json:"event"` // deploy_succeeded, deploy_failed, drift_opened, drift_resolved, git_unreachable, git_recovered, history_rewritten
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

// Pass outcomes (and, for OutcomeWaitingImage, a state of the loop).
const (
	OutcomeSucceeded    = "succeeded"     // every host converged to the revision
	OutcomeFailed       = "failed"        // a bad release, an image error, or no host reachable
	OutcomePartial      = "partial"       // some hosts unreachable or failed; retried next pass
	OutcomeNoop         = "noop"          // every host already matched
	OutcomeInvalid      = "invalid"       // the configuration does not load; no host touched
	OutcomeWaitingImage = "waiting_image" // the image tag is not in the registry yet
	OutcomeUntrusted    = "untrusted"     // the commit's signature is missing or not trusted; no host touched
	OutcomeWindowClosed = "window_closed" // (a state) a deploy window is closed; the pass waits for it to open
)

// Triggers of a pass.
const (
	TriggerPoll    = "poll"
	TriggerWebhook = "webhook"
	TriggerManual  = "manual"
	TriggerCron    = "cron"
	TriggerStartup = "startup"
	TriggerHeal    = "self-heal"
)

// Request asks for a pass, and says who asked.
type Request struct {
	Kind string // TriggerPoll, TriggerWebhook, …
	// By is who asked: a webhook's sender ("github:ada"), an API token's
	// name ("token:ci"); "" when the loop itself started the pass.
	By    string
	Force bool // retry a revision that failed
	// RerunJobs runs the release jobs again even when they succeeded for
	// the revision (implies Force).
	RerunJobs bool
	// Override deploys even while a deploy window is closed (implies
	// Force).
	Override bool
}

// ErrUntrusted is wrapped by a Verify error: the revision must not deploy.
var ErrUntrusted = errors.New("untrusted commit")

// WindowState says whether deploys are open now; Until is when that
// changes (zero: never).
type WindowState struct {
	Open   bool
	Reason string
	Until  time.Time
}

// WindowWait is a pass held by a closed deploy window.
type WindowWait struct {
	Reason string    `json:"reason"`
	Opens  time.Time `json:"opens,omitzero"`
}

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
	// Jobs remembers the release jobs that succeeded per revision; nil
	// runs them on every pass that deploys.
	Jobs JobLedger
	// OnPass, when set, learns each applied pass's outcome and duration
	// (metrics).
	OnPass func(outcome string, took time.Duration)
	// Verify, when set, vets a new revision before it is loaded (commit
	// signatures): an error refuses it (OutcomeUntrusted, alert
	// deploy_refused, hosts untouched), and the last trusted revision
	// keeps running. It is asked again only for a new head or a forced
	// sync.
	Verify func(ctx context.Context, rev Revision) error
	// Window, when set, says whether deploys are open at a time: a pass
	// that would change a host waits while they are not (unless forced
	// with Override), and so does self-heal unless HealInWindows.
	Window        func(time.Time) WindowState
	HealInWindows bool

	// lastFailure is the revision and text of the last failure alerted,
	// so that a failure retried every poll is alerted once.
	lastFailure string

	wake     chan Request
	mu       sync.Mutex
	status   LoopStatus
	lastGood *App
	// lastGoodRev is the revision lastGood was loaded from.
	lastGoodRev string
	// loaded is the App of loadedRev, reused while the revision does not
	// change: polls then keep its SSH channels, observed homes and booted
	// proxy driver instead of loading everything again.
	loaded    *App
	loadedRev string
	// wakeAt is when a closed deploy window opens: the loop polls then.
	wakeAt time.Time
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
	// Unreachable lists the hosts the last pass could not observe.
	Unreachable []string `json:"unreachable,omitempty"`
	// Pending lists the hosts not yet converged to Revision.
	Pending []string `json:"pending,omitempty"`
	// Waiting is set while the pass waits for the image in its registry.
	Waiting *ImageWait `json:"waiting_image,omitempty"`
	// Window is set while a closed deploy window holds a pass.
	Window *WindowWait `json:"window_closed,omitempty"`
}

// ImageWait is a pass waiting for its image tag to appear.
type ImageWait struct {
	Image  string    `json:"image"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// Status returns a snapshot of the loop's state.
func (l *Loop) Status() LoopStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.App = l.Name
	s.Drift = append([]Drift(nil), l.status.Drift...)
	if s.Waiting != nil {
		w := *s.Waiting
		s.Waiting = &w
	}
	return s
}

func (l *Loop) init() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan Request, 1)
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
	l.Request(Request{Kind: kind, Force: force})
}

// TriggerRerunJobs asks for a forced pass that also runs the release jobs
// again, even those that succeeded for the revision.
func (l *Loop) TriggerRerunJobs(kind string) {
	l.Request(Request{Kind: kind, RerunJobs: true})
}

// Request asks for a pass soon. Bursts coalesce into one pass; a forced
// request is not lost behind a plain one.
func (l *Loop) Request(tr Request) {
	l.init()
	tr.Force = tr.Force || tr.RerunJobs || tr.Override
	select {
	case l.wake <- tr:
	default:
		if tr.Force { // make sure a forced request is not lost behind a plain one
			select {
			case <-l.wake:
			default:
			}
			select {
			case l.wake <- tr:
			default:
			}
		}
	}
}

// Run runs the loop until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	l.init()
	log := l.Log.With("app", l.Name)
	gitFailures, gitAlerted := 0, false
	nextPoll := time.Now()
	var nextSweep time.Time
	if l.Sweep != nil {
		nextSweep = l.Sweep(time.Now())
	}
	tr := Request{Kind: TriggerStartup}
	for {
		wait := time.Until(nextPoll)
		sweep := false
		if l.Sweep != nil && nextSweep.Before(nextPoll) {
			wait = time.Until(nextSweep)
		}
		if tr.Kind == "" {
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
					tr = Request{Kind: TriggerCron}
				} else {
					tr = Request{Kind: TriggerPoll}
				}
			}
		}
		if sweep {
			l.sweep(ctx, log)
			nextSweep = l.Sweep(time.Now())
			tr = Request{}
			continue
		}
		err := l.syncOnce(ctx, log, tr)
		tr = Request{}
		if errors.Is(err, errGit) {
			gitFailures++
			l.setGitErrors(gitFailures)
			backoff := min(l.Poll, time.Duration(1<<min(gitFailures, 6))*time.Second)
			alertAt := l.GitAlertAfter
			if errors.Is(err, ErrPermanent) {
				// Waiting does not fix a refused credential: say so now,
				// and ask again only at the poll interval.
				backoff, alertAt = l.Poll, 1
			}
			nextPoll = time.Now().Add(jitter(backoff))
			if !gitAlerted && gitFailures >= alertAt {
				gitAlerted = true
				l.notify(Event{Kind: "git_unreachable", App: l.Name, Detail: err.Error()})
			}
			log.Warn("git sync failed", "err", err, "failures", gitFailures, "retry_in", time.Until(nextPoll).Round(time.Second))
			continue
		}
		if gitFailures > 0 {
			if gitAlerted {
				l.notify(Event{Kind: "git_recovered", App: l.Name, Detail: fmt.Sprintf("git reachable again after %d failures", gitFailures)})
			}
			log.Info("git sync recovered", "after_failures", gitFailures)
			gitFailures, gitAlerted = 0, false
			l.setGitErrors(0)
		}
		nextPoll = time.Now().Add(jitter(l.Poll))
		if at := l.takeWake(); !at.IsZero() && at.Before(nextPoll) {
			nextPoll = at
		}
	}
}

// takeWake returns and clears the time a closed window asked to be woken.
func (l *Loop) takeWake() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := l.wakeAt
	l.wakeAt = time.Time{}
	return at
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

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
