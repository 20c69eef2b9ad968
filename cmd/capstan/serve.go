package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capstan-dev/capstan/gitwatch"
	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/notify"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/internal/registry"
	"github.com/capstan-dev/capstan/internal/webhook"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/state"
)

func init() {
	register(command{name: "serve", summary: "run the GitOps daemon: watch git, deploy on merge, sweep for drift", run: runServe})
}

// maxWebhookBody bounds webhook and API request bodies.
const maxWebhookBody = 1 << 20

// daemon is a running capstan serve.
type daemon struct {
	e        *env
	cfg      *serveConfig
	store    *state.Store
	notif    *notify.Notifier
	key      []byte
	instance string // this daemon's lock ID, kept across restarts
	secrets  map[string]string
	apps     map[string]*appRunner
	order    []string
	metrics  *metrics
	ready    bool
	mu       sync.Mutex
	started  time.Time
}

// appRunner is one app's loop and its wiring.
type appRunner struct {
	cfg  appConfig
	repo *gitwatch.Repo
	loop *reconcile.Loop
	mu   sync.Mutex
	// pool, its redactor and the poolKey they were built for.
	pool    *hostexec.Pool
	red     *redact.Redactor
	poolKey string
	// last is the last App built on pool: the next one inherits what it
	// learned about the hosts.
	last *reconcile.App
}

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", "--config capstan.yml")
	cfgPath := fs.String("config", envOr("CAPSTAN_CONFIG", "capstan.yml"), "daemon configuration (env CAPSTAN_CONFIG)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	cfg, err := loadServeConfig(*cfgPath, e.getenv)
	if err != nil {
		var ce configErrors
		if errors.As(err, &ce) {
			for _, l := range ce {
				fmt.Fprintln(e.stderr, l)
			}
			return errSilent
		}
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	store, err := state.Open(filepath.Join(cfg.StateDir, "state.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	if n, err := store.AbandonRunning(ctx); err == nil && n > 0 {
		e.log.Warn("passes interrupted by the last stop were marked", "count", n)
	}
	key, err := stateKey(e, cfg.StateDir)
	if err != nil {
		return err
	}
	instance, err := instanceID(cfg.StateDir)
	if err != nil {
		return err
	}
	secrets := map[string]string{}
	if cfg.SecretsEnvFile != "" {
		b, err := os.ReadFile(cfg.SecretsEnvFile)
		if err != nil {
			return fmt.Errorf("secrets_env_file: %w", err)
		}
		if secrets, err = kamal.ParseEnvFile(cfg.SecretsEnvFile, b); err != nil {
			return fmt.Errorf("secrets_env_file: %w", err)
		}
	}
	d := &daemon{e: e, cfg: cfg, store: store, key: key, instance: instance, secrets: secrets, apps: map[string]*appRunner{}, started: time.Now()}
	d.metrics = newMetrics(d)
	d.notif = notify.New(d.sinks(), deliveryRecorder{store: store, log: e}, e.log, notify.Options{})
	defer d.notif.Close()

	for _, ac := range cfg.Apps {
		r, err := d.newAppRunner(ac)
		if err != nil {
			return fmt.Errorf("app %s: %w", ac.Name, err)
		}
		d.apps[ac.Name] = r
		d.order = append(d.order, ac.Name)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	e.log.Info("capstan serving", "listen", ln.Addr().String(), "apps", len(d.apps), "state", cfg.StateDir)

	var wg sync.WaitGroup
	for _, name := range d.order {
		r := d.apps[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop.Run(ctx)
		}()
	}
	d.mu.Lock()
	d.ready = true
	d.mu.Unlock()
	go d.housekeeping(ctx)

	<-ctx.Done()
	e.log.Info("stopping: letting in-flight host steps finish")
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	for _, r := range d.apps {
		if r.pool != nil {
			r.pool.Close()
		}
	}
	e.log.Info("stopped")
	return nil
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

func (d *daemon) sinks() []notify.Sink {
	var out []notify.Sink
	for _, a := range d.cfg.Alerts {
		url := a.URL
		if a.URLEnv != "" {
			url = d.e.getenv(a.URLEnv)
		}
		switch a.Type {
		case "webhook":
			out = append(out, notify.Webhook{URL: url})
		case "slack":
			out = append(out, notify.Slack{URL: url})
		case "github":
			out = append(out, notify.GitHub{API: a.API, Token: d.e.getenv(a.TokenEnv)})
		}
	}
	return out
}

// housekeeping prunes old passes and sends drift reminders.
func (d *daemon) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := d.store.PrunePasses(ctx, d.cfg.KeepPasses); err != nil {
			d.e.log.Warn("prune passes", "err", err)
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

func (d *daemon) newAppRunner(ac appConfig) (*appRunner, error) {
	auth := gitwatch.Auth{}
	if ac.Git.TokenEnv != "" {
		auth.Token = d.e.getenv(ac.Git.TokenEnv)
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
	r := &appRunner{cfg: ac, repo: repo}
	log := d.e.log.With("app", ac.Name)
	r.loop = &reconcile.Loop{
		Name:   ac.Name,
		Source: gitSource{repo: repo, metrics: d.metrics, app: ac.Name},
		Load:   func(ctx context.Context, rev reconcile.Revision) (*reconcile.App, error) { return d.loadApp(r, rev) },
		Image:  d.imageCheck(log),
		Record: stateRecorder{store: d.store},
		Notify: loopNotifier{n: d.notif, repo: ac.Repo, env: ac.Destination, m: d.metrics},
		Log:    d.e.log,
		Poll:   time.Duration(ac.Poll),
		Sweep:  ac.schedule.Next,
		OnPass: func(_ string, took time.Duration) { d.metrics.passDur.WithLabelValues(ac.Name).Observe(took.Seconds()) },
		SelfHeal: func(a *reconcile.App) bool {
			if ac.SelfHeal != nil {
				return *ac.SelfHeal
			}
			return a.Config.Capstan.SelfHeal
		},
	}
	return r, nil
}

// loadApp turns a checked-out revision into an App (a fresh SSH pool per
// revision's ssh settings, reused while they do not change).
func (d *daemon) loadApp(r *appRunner, rev reconcile.Revision) (*reconcile.App, error) {
	dir := filepath.Join(rev.Dir, r.cfg.Path)
	cfg, err := kamal.Load(os.DirFS(dir), kamal.LoadOptions{
		Destination: r.cfg.Destination, Revision: rev.SHA, FingerprintKey: d.key, SecretsEnv: d.secrets,
		LookupEnv: func(k string) (string, bool) { v := d.e.getenv(k); return v, v != "" },
	})
	if err != nil {
		var es kamal.Errors
		if errors.As(err, &es) {
			return nil, errors.New(strings.Join(es.Lines(), "\n"))
		}
		return nil, err
	}
	ee := *d.e
	if d.cfg.SSH.KnownHosts != "" {
		ee.knownHosts = d.cfg.SSH.KnownHosts
	}
	if d.cfg.SSH.Identity != "" {
		ee.identity = d.cfg.SSH.Identity
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The pool is kept across revisions (its connections are the daemon's
	// warm path) and rebuilt only when the ssh block or the secrets change.
	if key := poolKey(cfg); r.pool == nil || key != r.poolKey {
		pool, red, err := newPool(&ee, cfg, d.cfg.SSH.AcceptNew)
		if err != nil {
			return nil, err
		}
		// The previous pool is not closed: the last good App, which drift
		// sweeps use until this revision deploys, still runs on it.
		r.pool, r.red, r.poolKey, r.last = pool, red, key, nil
		d.metrics.pools.Store(r.cfg.Name, pool)
	}
	app, err := newApp(&ee, cfg, r.pool, r.red)
	if err != nil {
		return nil, err
	}
	app.Log = d.e.log.With("app", r.cfg.Name, "rev", rev.SHA[:min(12, len(rev.SHA))])
	app.LockID = d.instance
	app.Inherit(r.last)
	r.last = app
	return app, nil
}

// imageCheck waits for the image in its registry before any host is
// touched, with the registry credentials from deploy.yml.
func (d *daemon) imageCheck(log *slog.Logger) reconcile.ImageCheck {
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
		if errors.Is(err, gitwatch.ErrAuth) || errors.Is(err, gitwatch.ErrBranchNotFound) {
			err = fmt.Errorf("%w: %w", reconcile.ErrPermanent, err)
		}
		return reconcile.Revision{}, false, err
	}
	return reconcile.Revision{SHA: rev.SHA, Author: rev.Author + " <" + rev.Email + ">", Message: rev.Message, Time: rev.Time, Dir: rev.Dir}, changed, nil
}

// stateRecorder adapts state.Store to reconcile.Recorder.
type stateRecorder struct{ store *state.Store }

func (s stateRecorder) RecordRevision(ctx context.Context, app string, rev reconcile.Revision) error {
	return s.store.RecordRevision(ctx, state.Revision{App: app, SHA: rev.SHA, Author: rev.Author, Message: rev.Message, Committed: rev.Time})
}

func (s stateRecorder) StartPass(ctx context.Context, app, revision, version, trigger string) (int64, error) {
	return s.store.StartPass(ctx, state.Pass{App: app, Revision: revision, Version: version, Trigger: trigger})
}

func (s stateRecorder) FinishPass(ctx context.Context, id int64, outcome, errText, plan string, steps []reconcile.PassStep) error {
	out := make([]state.Step, len(steps))
	for i, st := range steps {
		out[i] = state.Step{Host: st.Host, Step: st.Step, Started: st.Started, Finished: st.Finished, Result: st.Result, Error: st.Error, Logs: st.Logs}
	}
	return s.store.FinishPass(ctx, id, outcome, errText, plan, out)
}

func (s stateRecorder) LastAttempt(ctx context.Context, app string) (string, bool, error) {
	st, err := s.store.AppState(ctx, app)
	return st.LastAttempted, st.LastAttempted != "" && !st.LastAttemptOK, err
}

func (s stateRecorder) RecordAttempt(ctx context.Context, app, revision string, failed bool) error {
	return s.store.RecordAttempt(ctx, app, revision, !failed)
}

func (s stateRecorder) Converged(ctx context.Context, app string) (map[string]string, error) {
	return s.store.Converged(ctx, app)
}

func (s stateRecorder) MarkConverged(ctx context.Context, app, revision string, hosts []string) error {
	return s.store.MarkConverged(ctx, app, revision, hosts)
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
	opened, resolved, err := s.store.SyncDrift(ctx, app, sc, in)
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
	n    *notify.Notifier
	repo string
	env  string
	m    *metrics
}

func (l loopNotifier) Notify(e reconcile.Event) {
	switch e.Kind {
	case "deploy_succeeded":
		l.m.deploys.WithLabelValues(e.App, "succeeded").Inc()
	case "deploy_failed":
		l.m.deploys.WithLabelValues(e.App, "failed").Inc()
	}
	l.n.Notify(notify.Event{Event: e.Kind, App: e.App, Host: e.Host, Revision: e.Revision, Version: e.Version, Kind: e.Drift, Detail: e.Detail, Time: e.Time, Repo: l.repo, Environment: l.env})
}

// deliveryRecorder stores alert deliveries.
type deliveryRecorder struct {
	store *state.Store
	log   *env
}

func (r deliveryRecorder) RecordDelivery(sink string, e notify.Event, attempts int, err error) {
	payload, _ := json.Marshal(e)
	if rerr := r.store.RecordDelivery(context.Background(), sink, e.Event, e.App, string(payload), attempts, err); rerr != nil {
		r.log.log.Warn("record alert delivery", "err", rerr)
	}
}

// metrics are the Prometheus series of /metrics.
type metrics struct {
	reg       *prometheus.Registry
	passDur   *prometheus.HistogramVec
	deploys   *prometheus.CounterVec
	gitErrors *prometheus.CounterVec
	pools     sync.Map // app -> *hostexec.Pool
}

func newMetrics(d *daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.passDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "capstan_pass_duration_seconds", Help: "Duration of reconcile passes.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"app"})
	m.deploys = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capstan_deploys_total", Help: "Deploys by result."}, []string{"app", "result"})
	m.gitErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capstan_git_fetch_errors_total", Help: "Failed git syncs."}, []string{"app"})
	m.reg.MustRegister(m.passDur, m.deploys, m.gitErrors, collectorsFunc(d, m))
	return m
}

// collector reads gauges from the loops and SSH counters from the pools.
type collector struct {
	d *daemon
	m *metrics
}

var (
	descDrift   = prometheus.NewDesc("capstan_drift_open", "Open drift items.", []string{"app"}, nil)
	descLastOK  = prometheus.NewDesc("capstan_last_successful_sync_timestamp_seconds", "Time of the last successful pass.", []string{"app"}, nil)
	descSSH     = prometheus.NewDesc("capstan_ssh_commands_total", "SSH commands run.", []string{"app", "host"}, nil)
	descSSHFail = prometheus.NewDesc("capstan_ssh_command_failures_total", "SSH commands that failed.", []string{"app", "host"}, nil)
)

func collectorsFunc(d *daemon, m *metrics) prometheus.Collector { return collector{d: d, m: m} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDrift
	ch <- descLastOK
	ch <- descSSH
	ch <- descSSHFail
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for name, r := range c.d.apps {
		st := r.loop.Status()
		ch <- prometheus.MustNewConstMetric(descDrift, prometheus.GaugeValue, float64(len(st.Drift)), name)
		if !st.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, float64(st.LastSuccess.Unix()), name)
		}
	}
	c.m.pools.Range(func(k, v any) bool {
		for host, s := range v.(*hostexec.Pool).Stats() {
			ch <- prometheus.MustNewConstMetric(descSSH, prometheus.CounterValue, float64(s.Commands), k.(string), host)
			ch <- prometheus.MustNewConstMetric(descSSHFail, prometheus.CounterValue, float64(s.Failures), k.(string), host)
		}
		return true
	})
}

// routes is the HTTP surface.
func (d *daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		ready := d.ready
		d.mu.Unlock()
		if !ready {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /webhooks/github", d.webhook("github"))
	mux.HandleFunc("POST /webhooks/gitlab", d.webhook("gitlab"))
	mux.HandleFunc("POST /webhooks/gitea", d.webhook("gitea"))
	mux.HandleFunc("POST /api/v1/apps/{app}/sync", d.auth(d.apiSync))
	mux.HandleFunc("GET /api/v1/apps", d.auth(d.apiApps))
	mux.HandleFunc("GET /api/v1/apps/{app}", d.auth(d.apiApp))
	mux.HandleFunc("GET /api/v1/apps/{app}/history", d.auth(d.apiHistory))
	mux.HandleFunc("GET /api/v1/drift", d.auth(d.apiDrift))
	mux.HandleFunc("GET /{$}", d.statusPage)
	return mux
}

// auth requires the bearer token when api_token_env is set.
func (d *daemon) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if d.cfg.APITokenEnv != "" {
			want := d.e.getenv(d.cfg.APITokenEnv)
			got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="capstan"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		h(w, r)
	}
}

func (d *daemon) webhook(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		wh := d.cfg.Webhooks
		switch kind {
		case "github":
			err = webhook.VerifyGitHub([]byte(d.e.getenv(wh.GitHubSecretEnv)), r.Header.Get("X-Hub-Signature-256"), body)
		case "gitlab":
			err = webhook.VerifyGitLab([]byte(d.e.getenv(wh.GitLabTokenEnv)), r.Header.Get("X-Gitlab-Token"))
		case "gitea":
			sig := r.Header.Get("X-Gitea-Signature")
			if sig == "" {
				sig = r.Header.Get("X-Forgejo-Signature")
			}
			err = webhook.VerifyGitea([]byte(d.e.getenv(wh.GiteaSecretEnv)), sig, body)
		}
		if err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		if ev := r.Header.Get("X-GitHub-Event"); ev == "ping" {
			fmt.Fprintln(w, "pong")
			return
		}
		push, err := webhook.ParsePush(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		only := r.URL.Query().Get("app")
		var triggered []string
		for _, name := range d.order {
			a := d.apps[name]
			if only != "" && name != only {
				continue
			}
			if push.Matches(a.cfg.Repo) && push.Branch() == a.cfg.Branch {
				a.loop.Trigger(reconcile.TriggerWebhook, false)
				triggered = append(triggered, name)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"triggered": triggered})
	}
}

func (d *daemon) app(w http.ResponseWriter, r *http.Request) *appRunner {
	a := d.apps[r.PathValue("app")]
	if a == nil {
		http.Error(w, "no such app", http.StatusNotFound)
	}
	return a
}

func (d *daemon) apiSync(w http.ResponseWriter, r *http.Request) {
	a := d.app(w, r)
	if a == nil {
		return
	}
	force := r.URL.Query().Get("force") == "1" || r.URL.Query().Get("force") == "true"
	a.loop.Trigger(reconcile.TriggerManual, force)
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"app": a.cfg.Name, "force": force, "queued": true})
}

type appView struct {
	reconcile.LoopStatus
	Repo   string          `json:"repo"`
	Branch string          `json:"branch"`
	Passes []state.Pass    `json:"passes,omitempty"`
	Open   []state.Episode `json:"open_drift"`
}

func (d *daemon) view(ctx context.Context, a *appRunner, passes int) appView {
	v := appView{LoopStatus: a.loop.Status(), Repo: a.cfg.Repo, Branch: a.cfg.Branch}
	v.Open, _ = d.store.OpenDrift(ctx, a.cfg.Name)
	if passes > 0 {
		v.Passes, _ = d.store.History(ctx, a.cfg.Name, passes)
	}
	return v
}

func (d *daemon) apiApps(w http.ResponseWriter, r *http.Request) {
	var out []appView
	for _, n := range d.order {
		out = append(out, d.view(r.Context(), d.apps[n], 0))
	}
	writeJSONHTTP(w, out)
}

func (d *daemon) apiApp(w http.ResponseWriter, r *http.Request) {
	if a := d.app(w, r); a != nil {
		writeJSONHTTP(w, d.view(r.Context(), a, 10))
	}
}

func (d *daemon) apiHistory(w http.ResponseWriter, r *http.Request) {
	if a := d.app(w, r); a != nil {
		h, err := d.store.History(r.Context(), a.cfg.Name, 100)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSONHTTP(w, h)
	}
}

func (d *daemon) apiDrift(w http.ResponseWriter, r *http.Request) {
	eps, err := d.store.OpenDrift(r.Context(), r.URL.Query().Get("app"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSONHTTP(w, eps)
}

func writeJSONHTTP(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"dur": func(p state.Pass) string { return p.Duration().Round(time.Millisecond).String() },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>capstan</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:1rem;background:#f6f7f9;color:#1d2330}
h1{font-size:1.3rem;margin:0 0 1rem} h2{font-size:1.1rem;margin:.2rem 0}
.app{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:1rem;margin-bottom:1rem}
.ok{color:#137333}.bad{color:#b3261e}.warn{color:#a15c00}
table{border-collapse:collapse;width:100%;font-size:.9rem} td,th{text-align:left;padding:.25rem .4rem;border-top:1px solid #eef0f3;vertical-align:top}
code{font-size:.85rem} .muted{color:#5f6773} pre{white-space:pre-wrap;font-size:.8rem;margin:.2rem 0}
@media (max-width:600px){td,th{display:block;border:0;padding:.1rem 0}tr{display:block;border-top:1px solid #eef0f3;padding:.3rem 0}}
</style></head><body>
<h1>capstan</h1>
{{range .}}<section class="app" id="app-{{.App}}">
<h2>{{.App}} <span class="muted">{{.Branch}} · {{.Repo}}</span></h2>
<p>revision <code>{{short .Revision}}</code> · version <b class="version">{{.Version}}</b> ·
last pass <span class="{{if eq .LastOutcome "failed" "invalid"}}bad{{else}}ok{{end}} outcome">{{.LastOutcome}}</span> {{ago .LastPass}}{{if .Running}} · <span class="warn">deploying…</span>{{end}}</p>
{{if .LastError}}<pre class="bad">{{.LastError}}</pre>{{end}}
<table><tr><th>host</th><th>state</th></tr>
{{$app := .}}{{range .Hosts}}<tr class="host"><td>{{.}}</td><td>{{$h := .}}{{$n := 0}}{{range $app.Drift}}{{if eq .Host $h}}<div class="warn drift">{{.Kind}}: {{.Detail}}</div>{{end}}{{end}}</td></tr>{{end}}
</table>
<h3>open drift</h3>
{{if .Open}}<table>{{range .Open}}<tr class="drift-episode"><td>{{.Host}}</td><td class="warn">{{.Kind}}</td><td>{{.Detail}}</td><td class="muted">since {{ago .Opened}}</td></tr>{{end}}</table>{{else}}<p class="ok">none</p>{{end}}
<h3>recent passes</h3>
<table>{{range .Passes}}<tr class="pass"><td>#{{.ID}}</td><td>{{.Trigger}}</td><td><code>{{short .Revision}}</code> {{.Version}}</td><td class="{{if eq .Outcome "failed" "invalid"}}bad{{else}}ok{{end}}">{{.Outcome}}</td><td>{{dur .}}</td><td class="muted">{{ago .Started}}</td></tr>
{{if .Error}}<tr><td colspan="6"><pre class="bad">{{.Error}}</pre></td></tr>{{end}}
{{range .Steps}}<tr><td></td><td colspan="5" class="muted">{{.Host}}: {{.Step}} <span class="{{if eq .Result "ok"}}ok{{else}}bad{{end}}">{{.Result}}</span>{{if .Error}}<pre>{{.Error}}</pre>{{end}}{{if .Logs}}<pre>{{.Logs}}</pre>{{end}}</td></tr>{{end}}
{{end}}</table>
</section>{{end}}
</body></html>`))

func (d *daemon) statusPage(w http.ResponseWriter, r *http.Request) {
	var views []appView
	for _, n := range d.order {
		views = append(views, d.view(r.Context(), d.apps[n], 10))
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].App < views[j].App })
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusTmpl.Execute(w, views); err != nil {
		d.e.log.Error("status page", "err", err)
	}
}
