package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/capstan-dev/capstan/gitwatch"
	"github.com/capstan-dev/capstan/internal/notify"
	"github.com/capstan-dev/capstan/internal/registry"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/state"
)

// This file holds the adapters between reconcile.Loop and the concrete
// git, state, registry and notify packages.

// imageCheck waits for the image in its registry before any host is
// touched, with the registry credentials from deploy.yml.
func (d *Daemon) imageCheck(log *slog.Logger) reconcile.ImageCheck {
	return func(ctx context.Context, app *reconcile.App, waiting func(string)) (string, error) {
		reg := app.Config.Registry
		c := &registry.Client{Username: reg.Username.Reveal(), Password: reg.Password.Reveal(), Insecure: d.cfg.InsecureRegistries}
		img := app.Config.Image()
		return c.Wait(ctx, img, time.Duration(d.cfg.ImageWait), func(err error, next time.Duration) {
			waiting(err.Error())
			log.Info("waiting for the image in the registry", "image", img, "retry_in", next.Round(time.Millisecond), "reason", err.Error())
		})
	}
}

// gitSource adapts gitwatch to the loop and counts fetch errors.
type gitSource struct {
	repo    *gitwatch.Repo
	metrics *metrics
	app     string
}

func (g gitSource) Sync(ctx context.Context) (reconcile.Revision, bool, error) {
	rev, changed, err := g.repo.Sync(ctx)
	if err != nil {
		g.metrics.gitErrors.WithLabelValues(g.app).Inc()
		if errors.Is(err, gitwatch.ErrAuth) || errors.Is(err, gitwatch.ErrBranchNotFound) || errors.Is(err, gitwatch.ErrTooLarge) {
			err = fmt.Errorf("%w: %w", reconcile.ErrPermanent, err)
		}
		return reconcile.Revision{}, false, err
	}
	out := reconcile.Revision{SHA: rev.SHA, Author: rev.Author + " <" + rev.Email + ">", Message: rev.Message, Time: rev.Time, Dir: rev.Dir}
	if changed {
		out.Rewritten = rev.Rewritten
	}
	return out, changed, nil
}

// stateRecorder adapts state.Store to reconcile.Recorder; store is the
// app's (fenced by its lease when replicas share the store).
type stateRecorder struct{ store func() *state.Store }

func (s stateRecorder) RecordRevision(ctx context.Context, app string, rev reconcile.Revision) error {
	return s.store().RecordRevision(ctx, state.Revision{App: app, SHA: rev.SHA, Author: rev.Author, Message: rev.Message, Committed: rev.Time, Rewritten: rev.Rewritten})
}

func (s stateRecorder) StartPass(ctx context.Context, app, revision, version string, by reconcile.Request) (int64, error) {
	return s.store().StartPass(ctx, state.Pass{App: app, Revision: revision, Version: version, Trigger: by.Kind, TriggeredBy: by.By, Override: by.Override})
}

func (s stateRecorder) FinishPass(ctx context.Context, id int64, outcome, errText, plan string, steps []reconcile.PassStep) error {
	out := make([]state.Step, len(steps))
	for i, st := range steps {
		out[i] = state.Step{Host: st.Host, Step: st.Step, Started: st.Started, Finished: st.Finished, Result: st.Result, Error: st.Error, Logs: st.Logs}
	}
	return s.store().FinishPass(ctx, id, outcome, errText, plan, out)
}

func (s stateRecorder) LastAttempt(ctx context.Context, app string) (string, bool, error) {
	st, err := s.store().AppState(ctx, app)
	return st.LastAttempted, st.LastAttempted != "" && !st.LastAttemptOK, err
}

func (s stateRecorder) RecordAttempt(ctx context.Context, app, revision string, failed bool) error {
	return s.store().RecordAttempt(ctx, app, revision, !failed)
}

func (s stateRecorder) Converged(ctx context.Context, app string) (map[string]string, error) {
	return s.store().Converged(ctx, app)
}

func (s stateRecorder) MarkConverged(ctx context.Context, app, revision string, hosts []string) error {
	return s.store().MarkConverged(ctx, app, revision, hosts)
}

func (s stateRecorder) JobSucceeded(ctx context.Context, app, revision, job string) (bool, error) {
	return s.store().JobSucceeded(ctx, app, revision, job)
}

func (s stateRecorder) RecordJob(ctx context.Context, app, revision, job string) error {
	return s.store().RecordJob(ctx, app, revision, job)
}

func (s stateRecorder) SyncDrift(ctx context.Context, app string, scope []reconcile.DriftScope, items []reconcile.Drift) ([]reconcile.Drift, []reconcile.Drift, error) {
	in := make([]state.DriftItem, len(items))
	for i, d := range items {
		in[i] = state.DriftItem{Host: d.Host, Kind: string(d.Kind), Subject: d.Role, Detail: d.Detail}
	}
	sc := make([]state.Scope, len(scope))
	for i, x := range scope {
		sc[i] = state.Scope{Host: x.Host}
		for _, k := range x.Kinds {
			sc[i].Kinds = append(sc[i].Kinds, string(k))
		}
	}
	opened, resolved, err := s.store().SyncDrift(ctx, app, sc, in)
	conv := func(es []state.Episode) []reconcile.Drift {
		var out []reconcile.Drift
		for _, e := range es {
			out = append(out, reconcile.Drift{Host: e.Host, Kind: reconcile.DriftKind(e.Kind), Role: e.Subject, Detail: e.Detail})
		}
		return out
	}
	return conv(opened), conv(resolved), err
}

// loopNotifier adapts notify to the loop and counts deploys.
type loopNotifier struct {
	n     *notify.Notifier
	repo  string
	env   string
	m     *metrics
	store *state.Store
}

func (l loopNotifier) Notify(e reconcile.Event) {
	switch e.Kind {
	case "deploy_succeeded":
		l.m.deploys.WithLabelValues(e.App, "succeeded").Inc()
		// A version deployed is no longer ahead: its pre-pull is done.
		_ = l.store.ForgetPrepull(context.Background(), e.App, e.Version)
	case "deploy_failed":
		l.m.deploys.WithLabelValues(e.App, "failed").Inc()
	}
	l.n.Notify(notify.Event{Event: e.Kind, App: e.App, Host: e.Host, Revision: e.Revision, Version: e.Version, Kind: e.Drift, Detail: e.Detail, Time: e.Time, Repo: l.repo, Environment: l.env})
}

// deliveryRecorder stores alert deliveries.
type deliveryRecorder struct {
	store *state.Store
	log   *slog.Logger
}

func (r deliveryRecorder) RecordDelivery(sink string, e notify.Event, attempts int, err error) {
	payload, _ := json.Marshal(e)
	if rerr := r.store.RecordDelivery(context.Background(), sink, e.Event, e.App, string(payload), attempts, err); rerr != nil {
		r.log.Warn("record alert delivery", "err", rerr)
	}
}
