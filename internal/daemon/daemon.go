// Package daemon is capstan serve: one reconcile.Loop per app of
// capstan.yml, wired to git (gitwatch), the state store, the alert sinks
// and an HTTP server (status page, JSON API, webhooks, metrics).
//
// It is part of the composition root with cmd/capstan: it builds the git,
// state and notify adapters itself and gets the SSH side (pools and Apps)
// from the command through Deps. Only cmd/capstan imports it.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/notify"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/state"
)

// Deps is what the command builds for the daemon.
type Deps struct {
	// Log is the daemon's logger; nil discards.
	Log *slog.Logger
	// Getenv reads the environment (tokens, secrets named by *_env keys
	// and by deploy.yml); nil means os.Getenv.
	Getenv func(string) string
	// LookupEnv reads deploy.yml's ENV (a variable set to "" is a value);
	// nil means os.LookupEnv when Getenv is nil, else Getenv with "" as
	// unset.
	LookupEnv func(string) (string, bool)
	// Key is the HMAC key of spec fingerprints, shared with the CLI.
	Key []byte
	// PoolKey, NewPool and NewApp build the SSH side of a revision whose
	// config loaded; they must be set unless no app's config ever loads.
	//
	// PoolKey identifies what NewPool depends on in a config: a revision
	// whose key equals the last one's reuses that pool.
	PoolKey func(cfg *kamal.Config) string
	// NewPool builds the SSH pool for a revision's config, and the
	// redactor of its secrets.
	NewPool func(cfg *kamal.Config) (*hostexec.Pool, *redact.Redactor, error)
	// NewApp wires an App (hosts, proxy driver) for cfg on a pool NewPool
	// built.
	NewApp func(cfg *kamal.Config, pool *hostexec.Pool, red *redact.Redactor) (*reconcile.App, error)
}

// Daemon is a configured capstan serve. New opens its store and
// repositories; Run serves and runs the loops; Close releases everything.
type Daemon struct {
	cfg      *Config
	deps     Deps
	log      *slog.Logger
	store    *state.Store
	notif    *notify.Notifier
	tokens   []*namedToken // the API tokens; none = the routes are open
	instance string        // this daemon's lock ID, kept across restarts
	secrets  map[string]string
	apps     map[string]*appRunner
	order    []string
	metrics  *metrics
	handler  http.Handler
	// logsOf is where an app's logs are read (its last loaded App; tests
	// put a fake).
	logsOf func(*appRunner) logSource
	// cluster is the replica protocol when replicas share a PostgreSQL
	// store (nil with SQLite: this process reconciles every app).
	cluster *cluster

	mu    sync.Mutex
	ready bool
	// runCtx is Run's context (background work started by requests
	// ends with it).
	runCtx context.Context
}

// ctx is Run's context, or the background before Run.
func (d *Daemon) ctx() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runCtx == nil {
		return context.Background()
	}
	return d.runCtx
}

// ErrNoToken is returned by New when api_token_env (or an api_tokens
// entry) names an empty variable: a missing token must not leave the API
// open.
var ErrNoToken = errors.New("an API token names an empty environment variable")

// New opens the daemon's state (cfg.StateDir), marks passes a previous
// process left running as interrupted, reads the secrets file and prepares
// every app's repository cache. cfg must come from LoadConfig (or be as
// valid): with api_token_env naming an empty variable it returns
// ErrNoToken, and without a token it refuses a non-loopback listen address
// unless insecure_public_status is set. Nothing is fetched and nothing
// listens until Run.
func New(ctx context.Context, cfg *Config, deps Deps) (*Daemon, error) {
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.LookupEnv == nil && deps.Getenv == nil {
		deps.LookupEnv = os.LookupEnv
	}
	if deps.LookupEnv == nil {
		getenv := deps.Getenv
		deps.LookupEnv = func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	}
	if deps.Getenv == nil {
		deps.Getenv = os.Getenv
	}
	d := &Daemon{cfg: cfg, deps: deps, log: deps.Log, secrets: map[string]string{}, apps: map[string]*appRunner{},
		logsOf: (*appRunner).logSource}
	tokens, err := loadTokens(cfg, deps.Getenv)
	if err != nil {
		return nil, err
	}
	d.tokens = tokens
	if err := checkExposure(cfg.Listen, len(d.tokens) > 0, cfg.InsecurePublicStatus); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.SecretsEnvFile != "" {
		b, err := os.ReadFile(cfg.SecretsEnvFile)
		if err != nil {
			return nil, fmt.Errorf("secrets_env_file: %w", err)
		}
		if d.secrets, err = kamal.ParseEnvFile(cfg.SecretsEnvFile, b); err != nil {
			return nil, fmt.Errorf("secrets_env_file: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	store, abandoned, err := d.openStore(ctx)
	if err != nil {
		return nil, err
	}
	d.store = store
	d.metrics = newMetrics(d)
	d.notif = notify.New(d.sinks(), deliveryRecorder{store: store, log: d.log}, d.log, notify.Options{})
	for _, ac := range cfg.Apps {
		r, err := d.newAppRunner(ac)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("app %s: %w", ac.Name, err)
		}
		d.apps[ac.Name] = r
		d.order = append(d.order, ac.Name)
	}
	d.alertInterrupted(abandoned)
	d.handler = d.routes()
	return d, nil
}

// Handler is the daemon's HTTP surface (what Run serves).
func (d *Daemon) Handler() http.Handler { return d.handler }

// Run listens on cfg.Listen, runs every app's loop and the housekeeping
// until ctx is done, then lets in-flight host steps finish and stops the
// server. It returns an error only when it cannot listen.
func (d *Daemon) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	d.log.Info("capstan serving", "listen", ln.Addr().String(), "apps", len(d.apps), "state", d.cfg.StateDir)

	var wg sync.WaitGroup
	if d.cluster != nil {
		// The apps' loops run while this replica holds their leases.
		wg.Go(func() { d.cluster.run(ctx) })
	} else {
		for i, name := range d.order {
			r := d.apps[name]
			wg.Go(func() { r.runAfter(ctx, time.Duration(i)*startGap) })
		}
	}
	d.mu.Lock()
	d.ready, d.runCtx = true, ctx
	d.mu.Unlock()
	go d.housekeeping(ctx)
	go d.watchTrust(ctx)

	<-ctx.Done()
	d.log.Info("stopping: letting in-flight host steps finish")
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	d.log.Info("stopped")
	return nil
}

// Close closes the SSH pools, flushes the alert deliveries and closes the
// store. Call it once, after Run returned (or instead of Run).
func (d *Daemon) Close() error {
	for _, r := range d.apps {
		r.closePool()
	}
	if d.notif != nil {
		d.notif.Close()
	}
	return d.store.Close()
}

// openStore opens the store capstan.yml names and returns the passes a
// previous process left running. With SQLite (one replica) they are
// marked interrupted here; with PostgreSQL a replica marks an app's when
// it takes the app over, since other replicas may be running theirs. The
// deploy lock's ID is this daemon's own with SQLite, and the cluster's
// with PostgreSQL: whichever replica holds an app reclaims a lock its dead
// predecessor left.
func (d *Daemon) openStore(ctx context.Context) (*state.Store, []state.Pass, error) {
	cfg := d.cfg
	if cfg.State.replicated() {
		store, err := state.OpenPostgres(ctx, d.deps.Getenv(cfg.State.DSNEnv))
		if err != nil {
			return nil, nil, fmt.Errorf("state (postgres): %w", err)
		}
		if d.instance, err = store.ClusterID(ctx); err == nil {
			d.cluster, err = newCluster(d)
		}
		if err != nil {
			store.Close()
			return nil, nil, err
		}
		return store, nil, nil
	}
	store, err := state.Open(filepath.Join(cfg.StateDir, "state.db"))
	if err != nil {
		return nil, nil, err
	}
	abandoned, err := store.AbandonRunning(ctx)
	if err != nil {
		d.log.Error("mark the passes the last stop interrupted", "err", err)
	} else if len(abandoned) > 0 {
		d.log.Warn("passes interrupted by the last stop were marked", "count", len(abandoned))
	}
	if d.instance, err = instanceID(cfg.StateDir); err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, abandoned, nil
}

// storedStatus is an app's status as another replica's last pass left it
// in the store.
func (d *Daemon) storedStatus(ctx context.Context, app string) reconcile.LoopStatus {
	st := reconcile.LoopStatus{App: app}
	if ps, err := d.store.History(ctx, app, 1); err == nil && len(ps) > 0 {
		p := ps[0]
		st.Revision, st.Version, st.LastPass, st.LastOutcome, st.LastError = p.Revision, p.Version, p.Started, p.Outcome, p.Error
		st.Running = p.Outcome == state.OutcomeRunning
	}
	if as, err := d.store.AppState(ctx, app); err == nil {
		st.LastSuccess = as.LastSuccess
	}
	return st
}

// alertInterrupted sends a deploy_interrupted alert for each pass a
// previous process left running (it was killed, or the machine stopped):
// its hosts may be between versions until the next pass converges them.
func (d *Daemon) alertInterrupted(passes []state.Pass) {
	repos := map[string]AppConfig{}
	for _, ac := range d.cfg.Apps {
		repos[ac.Name] = ac
	}
	for _, p := range passes {
		ac := repos[p.App]
		d.notif.Notify(notify.Event{Event: "deploy_interrupted", App: p.App, Revision: p.Revision, Version: p.Version,
			Detail: fmt.Sprintf("capstan stopped during the %s pass started %s; the next pass converges the hosts", p.Trigger, p.Started.UTC().Format(time.RFC3339)),
			Time:   time.Now(), Repo: ac.Repo, Environment: ac.Destination})
	}
}

// instanceID returns the daemon's persistent ID (its deploy locks carry it,
// so a restart after SIGKILL reclaims them).
func instanceID(stateDir string) (string, error) {
	p := filepath.Join(stateDir, "instance.id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) >= 8 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

func (d *Daemon) sinks() []notify.Sink {
	var out []notify.Sink
	for _, a := range d.cfg.Alerts {
		url := a.URL
		if a.URLEnv != "" {
			url = d.deps.Getenv(a.URLEnv)
		}
		switch a.Type {
		case "webhook":
			out = append(out, notify.Webhook{URL: url})
		case "slack":
			out = append(out, notify.Slack{URL: url})
		case "github":
			out = append(out, notify.GitHub{API: a.API, Token: d.deps.Getenv(a.TokenEnv)})
		}
	}
	return out
}

// housekeeping prunes old passes and sends drift reminders.
func (d *Daemon) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := d.store.PrunePasses(ctx, d.cfg.KeepPasses); err != nil {
			d.log.Warn("prune passes", "err", err)
		}
		for _, a := range d.cfg.Alerts {
			if a.Remind <= 0 {
				continue
			}
			due, err := d.store.DueReminders(ctx, time.Duration(a.Remind))
			if err != nil {
				continue
			}
			for _, ep := range due {
				d.notif.Notify(notify.Event{Event: "drift_reminder", App: ep.App, Host: ep.Host, Kind: ep.Kind, Detail: ep.Detail})
			}
			break
		}
	}
}
