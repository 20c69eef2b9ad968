package reconcile

import (
	"context"
	"log/slog"
	"time"
)

// sweep observes the hosts of the last applied revision, records drift
// episodes (alerting on open and resolve) and, when self-heal is on,
// converges the drifted hosts that answered.
func (l *Loop) sweep(ctx context.Context, log *slog.Logger) {
	l.mu.Lock()
	app, rev := l.lastGood, l.lastGoodRev
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
	var scope []DriftScope
	var down, up []*HostPlan
	for _, h := range plan.Hosts {
		if h.Error != "" {
			down = append(down, h)
			log.Warn("host unreachable", "host", h.Host, "err", h.Error)
			continue
		}
		up = append(up, h)
		scope = append(scope, DriftScope{Host: h.Host})
	}
	l.setHosts(plan, up)
	items := append(unreachableDrift(down), plan.only(func(h *HostPlan) bool { return h.Error == "" }).Drift()...)
	l.syncDrift(ctx, log, rev, scope, items)
	if len(items) > 0 {
		log.Warn("drift", "items", len(items))
	}
	if plan.Empty() || l.SelfHeal == nil || !l.SelfHeal(app) {
		return
	}
	if w := l.closedWindow(time.Now()); w != nil && !l.HealInWindows {
		log.Info("self-heal held: deploy window closed", "reason", w.Reason, "opens", w.Opens)
		return
	}
	log.Info("self-heal: converging drifted hosts")
	id, _ := l.Record.StartPass(ctx, l.Name, rev, app.Config.Version.Name(), Request{Kind: TriggerHeal})
	res, applyErr := app.Apply(ctx, plan)
	outcome, _ := classifyResult(res, applyErr)
	errText := ""
	if applyErr != nil {
		errText = applyErr.Error()
	}
	_ = l.Record.FinishPass(context.WithoutCancel(ctx), id, outcome, errText, planText(plan), passSteps(res))
}

// syncDrift records drift within scope and announces the episodes opened
// and resolved. It reports whether any episode changed.
func (l *Loop) syncDrift(ctx context.Context, log *slog.Logger, rev string, scope []DriftScope, items []Drift) bool {
	opened, resolved, err := l.Record.SyncDrift(context.WithoutCancel(ctx), l.Name, scope, items)
	if err != nil {
		log.Error("record drift", "err", err)
	}
	for _, d := range opened {
		l.notify(Event{Kind: "drift_opened", App: l.Name, Host: d.Host, Revision: rev, Drift: string(d.Kind), Detail: d.Detail})
	}
	for _, d := range resolved {
		l.notify(Event{Kind: "drift_resolved", App: l.Name, Host: d.Host, Revision: rev, Drift: string(d.Kind), Detail: d.Detail})
	}
	return len(opened)+len(resolved) > 0
}

func (l *Loop) setRunning(b bool) {
	l.mu.Lock()
	l.status.Running = b
	l.mu.Unlock()
}

// setHosts shows the plan's hosts, those that could not be observed, and
// the drift of the hosts compared with git (observed).
func (l *Loop) setHosts(p *Plan, observed []*HostPlan) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.Hosts, l.status.Unreachable, l.status.Drift = nil, nil, nil
	for _, h := range p.Hosts {
		l.status.Hosts = append(l.status.Hosts, h.Host)
		if h.Error != "" {
			l.status.Unreachable = append(l.status.Unreachable, h.Host)
			l.status.Drift = append(l.status.Drift, Drift{Host: h.Host, Kind: DriftUnreachable, Detail: h.Error})
		}
	}
	for _, h := range observed {
		l.status.Drift = append(l.status.Drift, h.Drift...)
	}
}

func (l *Loop) setPending(hosts []string) {
	l.mu.Lock()
	l.status.Pending = hosts
	l.mu.Unlock()
}

// setWaiting shows (or, with nil, clears) a wait for the image. A wait
// already shown keeps its start.
func (l *Loop) setWaiting(w *ImageWait) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w != nil {
		if l.status.Waiting != nil && l.status.Waiting.Image == w.Image {
			w.Since = l.status.Waiting.Since
		} else {
			w.Since = time.Now()
		}
		l.status.LastOutcome = OutcomeWaitingImage
	}
	l.status.Waiting = w
}

func (l *Loop) setLastGood(app *App, rev string) {
	l.mu.Lock()
	l.lastGood, l.lastGoodRev = app, rev
	l.mu.Unlock()
}

// firstFailure reports whether this failure of revision differs from the
// last one alerted, and remembers it.
func (l *Loop) firstFailure(revision, text string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := revision + "\x00" + text
	if l.lastFailure == key {
		return false
	}
	l.lastFailure = key
	return true
}

func (l *Loop) clearFailure() {
	l.mu.Lock()
	l.lastFailure = ""
	l.mu.Unlock()
}

// finish shows the pass's outcome; converged sets LastSuccess (every host
// runs the revision).
func (l *Loop) finish(rev Revision, version, outcome, errText string, converged bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.Revision, l.status.Version = rev.SHA, version
	l.status.LastPass, l.status.LastOutcome, l.status.LastError = time.Now(), outcome, errText
	if converged {
		l.status.LastSuccess = time.Now()
	}
}
