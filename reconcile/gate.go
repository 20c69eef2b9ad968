package reconcile

import (
	"context"
	"time"
)

// The gates a revision passes before it touches a host: Verify (who made
// the commit) before it is loaded, and the deploy windows (when it may
// deploy) once the pass knows it would change a host.

// untrusted records a revision Verify refused: no host touched, the pass
// recorded as OutcomeUntrusted, the attempt marked failed (asked again only
// for a new head or a forced sync), deploy_refused alerted once.
func (p *passRun) untrusted(ctx context.Context, err error) {
	l := p.l
	text := err.Error()
	id, _ := l.Record.StartPass(ctx, l.Name, p.rev.SHA, "", p.who)
	_ = l.Record.FinishPass(ctx, id, OutcomeUntrusted, text, "", nil)
	_ = l.Record.RecordAttempt(ctx, l.Name, p.rev.SHA, true)
	l.finish(p.rev, "", OutcomeUntrusted, text, false)
	l.notify(Event{Kind: "deploy_refused", App: l.Name, Revision: p.rev.SHA, Detail: text})
	p.log.Error("commit refused; no host touched, the last trusted revision keeps running", "err", text)
}

// heldByWindow reports whether a closed deploy window holds this pass (it
// then shows the wait and asks the loop to wake when the window opens). A
// request with Override goes through, and says so.
func (p *passRun) heldByWindow() bool {
	l := p.l
	w := l.closedWindow(time.Now())
	if w != nil && p.who.Override {
		p.log.Warn("deploying while the deploy window is closed: override", "by", p.who.By, "window", w.Reason)
		w = nil
	}
	if !l.setWindow(w) && w != nil {
		p.log.Info("deploy window closed; the pass waits", "version", p.version, "reason", w.Reason, "opens", w.Opens)
	}
	return w != nil
}

// closedWindow returns the wait when deploys are closed at now, nil when
// they are open (or no windows are set).
func (l *Loop) closedWindow(now time.Time) *WindowWait {
	if l.Window == nil {
		return nil
	}
	st := l.Window(now)
	if st.Open {
		return nil
	}
	return &WindowWait{Reason: st.Reason, Opens: st.Until}
}

// setWindow shows (or, with nil, clears) a pass held by a closed window,
// and has the loop poll when it opens. It reports whether the same wait
// was already shown.
func (l *Loop) setWindow(w *WindowWait) (shown bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	shown = w != nil && l.status.Window != nil && *l.status.Window == *w
	l.status.Window = w
	if w != nil {
		l.status.LastOutcome = OutcomeWindowClosed
		l.wakeAt = w.Opens
	}
	return shown
}
