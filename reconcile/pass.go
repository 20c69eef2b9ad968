package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// SyncNow runs one sync pass synchronously (tests and `capstan sync`).
func (l *Loop) SyncNow(ctx context.Context, kind string, force bool) error {
	l.init()
	return l.syncOnce(ctx, l.Log.With("app", l.Name), Request{Kind: kind, Force: force})
}

// syncOnce fetches and runs a pass over the head revision. A new revision
// (or a forced sync) converges every reachable host; an unchanged one
// converges only the hosts not yet converged to it and observes the rest.
// A revision that failed as a release waits for a new commit or a forced
// sync.
func (l *Loop) syncOnce(ctx context.Context, log *slog.Logger, tr Request) error {
	if tr.Kind != TriggerPoll {
		log.Info("pass started", "trigger", tr.Kind, "by", tr.By, "force", tr.Force, "override", tr.Override)
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
		if rev.Rewritten != "" {
			// It deploys like any new revision (the branch head is what
			// git says to run), but people should know.
			log.Warn("history rewritten", "detail", rev.Rewritten)
			l.notify(Event{Kind: "history_rewritten", App: l.Name, Revision: rev.SHA, Detail: rev.Rewritten})
		}
	}
	last, lastFailed, err := l.Record.LastAttempt(ctx, l.Name)
	if err != nil {
		return err
	}
	quiet := last == rev.SHA && !tr.Force
	if quiet && lastFailed {
		log.Debug("revision failed before; waiting for a new commit or a forced sync")
		return nil
	}
	p := &passRun{l: l, log: log, rev: rev, who: tr, quiet: quiet}
	if !quiet && l.Verify != nil {
		if err := l.Verify(ctx, rev); err != nil {
			p.untrusted(ctx, err)
			return nil
		}
	}
	return p.run(ctx)
}

// passRun is one pass over one revision: load, observe, record drift,
// wait for the image, converge the target hosts, summarize.
type passRun struct {
	l   *Loop
	log *slog.Logger
	rev Revision
	who Request
	// quiet: the revision was applied before and nobody forced a sync, so
	// hosts already converged to it are only observed.
	quiet bool

	app     *App
	version string
	plan    *Plan
	// before is each host's converged revision when the pass started.
	before map[string]string
	// targets are the reachable hosts this pass converges; watched are
	// the reachable hosts it only observes; down could not be observed.
	targets, watched, down []*HostPlan
	driftChanged           bool

	// passID is the recorded pass, started when the apply starts.
	passID   int64
	res      *Result
	applyErr error
	outcome  string
	errText  string
	// permanent: a bad release, not retried for this revision.
	permanent bool
}

func (p *passRun) run(ctx context.Context) error {
	l := p.l
	l.setRunning(true)
	defer l.setRunning(false)
	if err := p.load(ctx); err != nil {
		p.invalid(ctx, err)
		return nil
	}
	if err := p.observe(ctx); err != nil {
		return err
	}
	p.recordDrift(ctx)
	if !p.hasSteps() {
		p.converge(ctx) // marks the matching hosts converged; applies nothing
		p.summarize(ctx)
		return nil
	}
	if p.heldByWindow() {
		return nil
	}
	if err := p.waitImage(ctx); err != nil {
		p.imageFailed(ctx, err)
		return nil
	}
	p.converge(ctx)
	p.summarize(ctx)
	return nil
}

// load returns the App of the revision (reused while it is unchanged).
func (p *passRun) load(ctx context.Context) error {
	app, err := p.l.load(ctx, p.rev)
	if err != nil {
		return err
	}
	p.app, p.version = app, app.Config.Version.Name()
	return nil
}

// invalid records a configuration that does not load. No host is touched.
func (p *passRun) invalid(ctx context.Context, err error) {
	l := p.l
	id, _ := l.Record.StartPass(ctx, l.Name, p.rev.SHA, "", p.who)
	_ = l.Record.FinishPass(ctx, id, OutcomeInvalid, err.Error(), "", nil)
	_ = l.Record.RecordAttempt(ctx, l.Name, p.rev.SHA, true)
	l.finish(p.rev, "", OutcomeInvalid, err.Error(), false)
	l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: p.rev.SHA, Detail: "invalid configuration: " + err.Error()})
	p.log.Error("configuration invalid; no host touched", "err", err)
}

// observe plans every host and sorts them into targets, watched and down.
func (p *passRun) observe(ctx context.Context) error {
	l := p.l
	p.log.Debug("observing hosts", "version", p.version)
	plan, err := p.app.Plan(ctx)
	if err != nil {
		return err
	}
	p.plan = plan
	if p.before, err = l.Record.Converged(ctx, l.Name); err != nil {
		return err
	}
	for _, h := range plan.Hosts {
		switch {
		case h.Error != "":
			p.down = append(p.down, h)
			p.log.Warn("host unreachable", "host", h.Host, "err", h.Error)
		case p.quiet && p.before[h.Host] == p.rev.SHA:
			p.watched = append(p.watched, h)
		default:
			p.targets = append(p.targets, h)
		}
	}
	l.setHosts(plan, p.watched)
	return nil
}

// recordDrift records what this pass saw: the drift of watched hosts, and
// whether each host answered. The drift of target hosts is not recorded:
// this pass is about to converge them.
func (p *passRun) recordDrift(ctx context.Context) {
	var scope []DriftScope
	items := unreachableDrift(p.down)
	for _, h := range p.watched {
		scope = append(scope, DriftScope{Host: h.Host})
		items = append(items, h.Drift...)
	}
	for _, h := range p.targets {
		scope = append(scope, DriftScope{Host: h.Host, Kinds: []DriftKind{DriftUnreachable}})
	}
	p.driftChanged = p.l.syncDrift(ctx, p.log, p.rev.SHA, scope, items)
}

// unreachableDrift is one drift item per host that could not be observed.
func unreachableDrift(down []*HostPlan) []Drift {
	var out []Drift
	for _, h := range down {
		out = append(out, Drift{Host: h.Host, Kind: DriftUnreachable, Detail: h.Error})
	}
	return out
}

func (p *passRun) hasSteps() bool {
	return slices.ContainsFunc(p.targets, func(h *HostPlan) bool { return len(h.Steps) > 0 })
}

// changed reports whether the apply took steps on a host (a pull alone
// changes nothing; a step re-planned away after a lock wait is not taken).
func (p *passRun) changed() bool {
	if p.res == nil {
		return false
	}
	for _, h := range p.res.Hosts {
		for _, s := range h.Steps {
			if s.Kind != StepPull {
				return true
			}
		}
	}
	return false
}

// waitImage waits for the image in its registry, showing the wait.
func (p *passRun) waitImage(ctx context.Context) error {
	l := p.l
	if l.Image == nil {
		return nil
	}
	defer l.setWaiting(nil)
	digest, err := l.Image(ctx, p.app, func(reason string) {
		l.setWaiting(&ImageWait{Image: p.app.Config.Image(), Reason: reason})
	})
	if err != nil {
		return err
	}
	p.app.ImageDigest = digest
	p.log.Info("image ready", "image", p.app.Config.Image(), "digest", digest)
	return nil
}

// imageFailed records an image that is not there (or cannot be read). The
// revision is not marked failed: the next poll asks again. The pass is
// recorded and alerted once per distinct error.
func (p *passRun) imageFailed(ctx context.Context, err error) {
	l := p.l
	text := err.Error()
	l.finish(p.rev, p.version, OutcomeFailed, text, false)
	p.log.Error("image not available; no host touched", "image", p.app.Config.Image(), "err", err)
	if !l.firstFailure(p.rev.SHA, text) {
		return
	}
	id, _ := l.Record.StartPass(ctx, l.Name, p.rev.SHA, p.version, p.who)
	_ = l.Record.FinishPass(ctx, id, OutcomeFailed, text, planText(p.plan), nil)
	l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: p.rev.SHA, Version: p.version, Detail: text})
}

// converge applies the plan of the target hosts (with the hosts that are
// down, so the result names them) and marks the hosts that now match.
func (p *passRun) converge(ctx context.Context) {
	targets := map[*HostPlan]bool{}
	for _, h := range p.targets {
		targets[h] = true
	}
	sub := p.plan.only(func(h *HostPlan) bool { return targets[h] || h.Error != "" })
	if p.hasSteps() {
		var err error
		if p.passID, err = p.l.Record.StartPass(ctx, p.l.Name, p.rev.SHA, p.version, p.who); err != nil {
			p.log.Error("record pass", "err", err)
		}
		p.log.Info("applying", "version", p.version, "trigger", p.who.Kind, "by", p.who.By, "override", p.who.Override, "hosts", len(p.targets))
	}
	p.app.Jobs = JobScope{Ledger: p.l.Jobs, App: p.l.Name, Revision: p.rev.SHA, Rerun: p.who.RerunJobs}
	p.res, p.applyErr = p.app.Apply(ctx, sub)
	var done []string
	if p.res != nil {
		for _, hr := range p.res.Hosts {
			if hr.Error == "" {
				done = append(done, hr.Host)
			}
		}
	}
	rctx := context.WithoutCancel(ctx) // recording survives SIGTERM mid-pass
	if err := p.l.Record.MarkConverged(rctx, p.l.Name, p.rev.SHA, done); err != nil {
		p.log.Error("record converged hosts", "err", err)
	}
}

// after returns each host's converged revision once the pass is over.
func (p *passRun) after() map[string]string {
	out := map[string]string{}
	for h, r := range p.before {
		out[h] = r
	}
	if p.res != nil {
		for _, hr := range p.res.Hosts {
			if hr.Error == "" {
				out[hr.Host] = p.rev.SHA
			}
		}
	}
	return out
}

// pending returns the hosts of the plan not converged to the revision in
// conv.
func (p *passRun) pending(conv map[string]string) []string {
	var out []string
	for _, h := range p.plan.Hosts {
		if conv[h.Host] != p.rev.SHA {
			out = append(out, h.Host)
		}
	}
	return out
}

// summarize decides the outcome, records the pass and the attempt, and
// tells people: deploy_succeeded once, when the last host converges to a
// revision; deploy_failed for a bad release, and once per distinct error
// for a held deploy lock, a failed pull or no host reachable (all retried
// every poll).
func (p *passRun) summarize(ctx context.Context) {
	l := p.l
	applied := p.changed()
	p.outcome, p.permanent = classifyResult(p.res, p.applyErr)
	if p.applyErr != nil {
		p.errText = p.applyErr.Error()
	}
	allDown := len(p.down) == len(p.plan.Hosts) && len(p.plan.Hosts) > 0
	switch {
	case p.outcome == OutcomeFailed: // a bad release or a held lock
	case allDown:
		p.outcome = OutcomeFailed
		p.errText = "no host reachable: " + strings.Join(hostErrors(p.down), "; ")
	case len(p.down) > 0:
		p.outcome = OutcomePartial
	case p.outcome == OutcomeSucceeded && !applied:
		p.outcome = OutcomeNoop
	}
	// A failure retried every poll is recorded and alerted once.
	key := p.errText
	switch {
	case allDown:
		key = "no host reachable" // the hosts' errors may vary from poll to poll
	case errors.Is(p.applyErr, ErrPull):
		key = "image pull failed" // so may the registry's and the disks'
	}
	repeat := p.outcome == OutcomeFailed && !p.permanent && !l.firstFailure(p.rev.SHA, key)
	pendingBefore, pendingAfter := p.pending(p.before), p.pending(p.after())
	if l.OnPass != nil && p.res != nil && applied {
		l.OnPass(p.outcome, p.res.Finished.Sub(p.res.Started))
	}
	rctx := context.WithoutCancel(ctx)
	switch {
	case p.passID != 0: // it applied: every attempt is history
		_ = l.Record.FinishPass(rctx, p.passID, p.outcome, p.errText, planText(p.plan), passSteps(p.res))
	case !repeat && (!p.quiet || p.driftChanged || news(l.Status().LastOutcome, p.outcome)):
		id, _ := l.Record.StartPass(rctx, l.Name, p.rev.SHA, p.version, p.who)
		_ = l.Record.FinishPass(rctx, id, p.outcome, p.errText, planText(p.plan), passSteps(p.res))
	}
	_ = l.Record.RecordAttempt(rctx, l.Name, p.rev.SHA, p.permanent)
	l.finish(p.rev, p.version, p.outcome, p.errText, len(pendingAfter) == 0)
	l.setPending(pendingAfter)
	if p.outcome != OutcomeFailed {
		l.setLastGood(p.app, p.rev.SHA)
	}
	switch {
	case p.permanent:
		l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: p.rev.SHA, Version: p.version, Detail: p.errText})
		p.log.Error("deploy failed", "version", p.version, "err", p.applyErr)
	case len(pendingAfter) == 0 && len(pendingBefore) > 0 && applied:
		l.clearFailure()
		l.notify(Event{Kind: "deploy_succeeded", App: l.Name, Revision: p.rev.SHA, Version: p.version, Detail: "all hosts run " + p.version})
		p.log.Info("deployed", "version", p.version, "took", p.res.Finished.Sub(p.res.Started).Round(time.Millisecond))
	case p.outcome == OutcomeFailed:
		if !repeat {
			l.notify(Event{Kind: "deploy_failed", App: l.Name, Revision: p.rev.SHA, Version: p.version, Detail: p.errText})
		}
		p.log.Error("pass failed; retrying next poll", "version", p.version, "err", p.errText)
	case p.outcome == OutcomePartial:
		p.log.Warn("hosts not converged; converging them next pass", "pending", pendingAfter, "err", p.applyErr)
	case applied:
		p.log.Info("converged", "version", p.version, "hosts", len(p.targets))
	}
}

// news reports whether a quiet pass's outcome is worth a history entry
// after the last one: a change, except a noop after a success.
func news(last, outcome string) bool {
	return outcome != last && !(outcome == OutcomeNoop && last == OutcomeSucceeded)
}

func hostErrors(hs []*HostPlan) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Host+": "+h.Error)
	}
	return out
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

// classifyResult: a failed health check, an image without the service
// label or for another platform, a barrier, or a release job that failed
// is a bad release (permanent:
// not retried for the same revision); a failed pull (the registry or the
// host failing for now) and a deploy lock someone else holds fail the pass
// and are retried next poll; other host errors are a partial result
// retried on the next pass.
func classifyResult(res *Result, err error) (outcome string, permanent bool) {
	switch {
	case err == nil:
		return OutcomeSucceeded, false
	case errors.Is(err, ErrPull) && !errors.Is(err, ErrPermanent):
		return OutcomeFailed, false
	case errors.Is(err, ErrUnhealthy) || errors.Is(err, ErrPull) || errors.Is(err, ErrBarrier) || errors.Is(err, ErrRolledBack) || errors.Is(err, ErrJobFailed):
		return OutcomeFailed, true
	case errors.Is(err, ErrLocked):
		return OutcomeFailed, false
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
