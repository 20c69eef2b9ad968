package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-dev/capstan/gitwatch"
	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/state"
	"github.com/robfig/cron/v3"
)

// appRunner is one app's loop and its wiring.
type appRunner struct {
	cfg  AppConfig
	repo *gitwatch.Repo
	loop *reconcile.Loop
	mu   sync.Mutex
	// pool, its redactor and the PoolKey they were built for.
	pool    *hostexec.Pool
	red     *redact.Redactor
	poolKey string
	// last is the last App built on pool: the next one inherits what it
	// learned about the hosts.
	last *reconcile.App
	// trust verifies commit signatures (nil: every commit deploys).
	trust *trust
	// prs posts pull requests' plans (nil: pull_requests not set).
	prs *prPlanner
	// pre pulls coming versions onto the hosts.
	pre *prepuller
	// ten is this replica's hold on the app when replicas share the
	// store (nil: another replica reconciles it).
	ten atomic.Pointer[tenure]
}

// writes is the store the app's records go to: with replicas, fenced by
// the app's lease (without one, every write fails with ErrLeaseLost).
func (r *appRunner) writes(d *Daemon) *state.Store {
	if d.cluster == nil {
		return d.store
	}
	if t := r.ten.Load(); t != nil {
		return t.store
	}
	return d.store.Fenced(state.Lease{App: r.cfg.Name})
}

// ctx is the context of work for the app outside its loop (pre-pulls):
// with replicas, the tenure's, whose host actions the lease fences.
func (r *appRunner) ctx(d *Daemon) context.Context {
	if t := r.ten.Load(); t != nil {
		return t.ctx
	}
	return d.ctx()
}

func (d *Daemon) newAppRunner(ac AppConfig) (*appRunner, error) {
	auth := gitwatch.Auth{}
	if ac.Git.TokenEnv != "" {
		auth.Token = d.deps.Getenv(ac.Git.TokenEnv)
	}
	if ac.Git.SSHKey != "" {
		b, err := os.ReadFile(ac.Git.SSHKey)
		if err != nil {
			return nil, fmt.Errorf("git.ssh_key: %w", err)
		}
		auth.SSHKey = b
	}
	kh := ac.Git.KnownHosts
	if kh == "" {
		kh = d.cfg.SSH.KnownHosts
	}
	if kh != "" {
		auth.KnownHosts = []string{kh}
	}
	repo, err := gitwatch.Open(filepath.Join(d.cfg.StateDir, "repos", ac.Name), gitwatch.Source{URL: ac.Repo, Branch: ac.Branch, Auth: auth})
	if err != nil {
		return nil, err
	}
	// After a restart the repository compares the branch head with the
	// revision last worked on, so a force-push while capstan was down is
	// still told.
	if st, err := d.store.AppState(context.Background(), ac.Name); err == nil && st.LastAttempted != "" {
		_ = repo.SetLast(st.LastAttempted)
	}
	r := &appRunner{cfg: ac, repo: repo}
	log := d.log.With("app", ac.Name)
	r.loop = &reconcile.Loop{
		Name:   ac.Name,
		Source: gitSource{repo: repo, metrics: d.metrics, app: ac.Name},
		Load:   func(ctx context.Context, rev reconcile.Revision) (*reconcile.App, error) { return d.loadApp(r, rev) },
		Image:  d.imageCheck(log),
		Record: stateRecorder{store: func() *state.Store { return r.writes(d) }},
		Jobs:   stateRecorder{store: func() *state.Store { return r.writes(d) }},
		Notify: loopNotifier{n: d.notif, repo: ac.Repo, env: ac.Destination, m: d.metrics, store: d.store},
		Log:    d.log,
		Poll:   time.Duration(ac.Poll),
		Sweep:  staggered(ac.Name, ac.schedule),
		OnPass: func(_ string, took time.Duration) { d.metrics.passDur.WithLabelValues(ac.Name).Observe(took.Seconds()) },
		SelfHeal: func(a *reconcile.App) bool {
			if ac.SelfHeal != nil {
				return *ac.SelfHeal
			}
			return a.Config.Capstan.SelfHeal
		},
	}
	if r.trust, err = d.newTrust(ac); err != nil {
		return nil, err
	}
	if r.trust != nil {
		r.loop.Verify = r.trust.check
	}
	if r.prs, err = d.newPRPlanner(r); err != nil {
		return nil, err
	}
	r.pre = &prepuller{d: d, r: r, busy: map[string]bool{}}
	if ac.windows != nil {
		r.loop.Window, r.loop.HealInWindows = windowState(ac.windows), ac.HealInWindows
	}
	return r, nil
}

// loadApp turns a checked-out revision into an App (a fresh SSH pool per
// revision's ssh settings, reused while they do not change).
func (d *Daemon) loadApp(r *appRunner, rev reconcile.Revision) (*reconcile.App, error) {
	dir := filepath.Join(rev.Dir, r.cfg.Path)
	cfg, err := kamal.LoadDir(dir, kamal.LoadOptions{
		Destination: r.cfg.Destination, Revision: rev.SHA, RevisionTime: rev.Time, FingerprintKey: d.deps.Key, SecretsEnv: d.secrets,
		LookupEnv: d.deps.LookupEnv,
	})
	if err != nil {
		var es kamal.Errors
		if errors.As(err, &es) {
			return nil, errors.New(strings.Join(es.Lines(), "\n"))
		}
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The pool is kept across revisions (its connections are the daemon's
	// warm path) and rebuilt only when the ssh block or the secrets change.
	if key := d.deps.PoolKey(cfg); r.pool == nil || key != r.poolKey {
		pool, red, err := d.deps.NewPool(cfg)
		if err != nil {
			return nil, err
		}
		// The previous pool is not closed: the last good App, which drift
		// sweeps use until this revision deploys, still runs on it.
		r.pool, r.red, r.poolKey, r.last = pool, red, key, nil
		d.metrics.pools.Store(r.cfg.Name, pool)
	}
	app, err := d.deps.NewApp(cfg, r.pool, r.red)
	if err != nil {
		return nil, err
	}
	app.Log = d.log.With("app", r.cfg.Name, "rev", rev.SHA[:min(12, len(rev.SHA))])
	app.LockID = d.instance
	app.LockTimeout = time.Duration(r.cfg.LockTimeout)
	app.ObserveTimeout = time.Duration(d.cfg.SSH.ObserveTimeout)
	app.Inherit(r.last)
	r.last = app
	return app, nil
}

// closePool closes the app's current SSH pool, if any.
func (r *appRunner) closePool() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool != nil {
		r.pool.Close()
	}
}

// maxSweepOffset bounds how far an app's drift sweeps are moved off their
// schedule's ticks.
const maxSweepOffset = 30 * time.Second

// staggered is schedule moved by an offset fixed per app (a hash of its
// name, under half the schedule's period and maxSweepOffset): fifty apps
// on "*/5 * * * *" sweep their hosts spread over half a minute, not all at
// the top of the minute.
func staggered(app string, schedule cron.Schedule) func(time.Time) time.Time {
	now := time.Now()
	first := schedule.Next(now)
	period := schedule.Next(first).Sub(first)
	span := min(period/2, maxSweepOffset)
	if span <= 0 {
		return schedule.Next
	}
	h := fnv.New64a()
	h.Write([]byte(app))
	offset := time.Duration(h.Sum64() % uint64(span))
	if _, relative := schedule.(cron.ConstantDelaySchedule); relative {
		// "@every D" counts from the last sweep: only the first one is
		// moved, and the apps keep their phases from then on. The loop
		// asks from one goroutine.
		first := true
		return func(now time.Time) time.Time {
			if first {
				first = false
				return schedule.Next(now).Add(offset)
			}
			return schedule.Next(now)
		}
	}
	return func(now time.Time) time.Time { return schedule.Next(now.Add(-offset)).Add(offset) }
}

// runAfter runs r's loop until ctx ends, after waiting delay (no run if
// ctx ends first).
func (r *appRunner) runAfter(ctx context.Context, delay time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	r.loop.Run(ctx)
}

// startGap spaces the first passes of a daemon's apps: the i-th starts
// i×startGap after the first, so many apps do not fetch and observe at
// once.
const startGap = 50 * time.Millisecond
