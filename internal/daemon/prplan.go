package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/internal/forge"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// PRConfig is an app's pull_requests block: where capstan posts the plan
// of a pull request against the app's branch.
type PRConfig struct {
	Provider string `yaml:"provider"` // github, gitea, gitlab
	// API is the forge's API base; default GitHub's or GitLab's public
	// one (required for Gitea).
	API      string `yaml:"api"`
	TokenEnv string `yaml:"token_env"`
	// MinInterval is the least time between two plans of one pull
	// request (default 30s); pushes in between coalesce into one plan of
	// the latest head.
	MinInterval Duration `yaml:"min_interval"`
}

// prTimeout bounds one plan (fetch, load, observe, post).
const prTimeout = 2 * time.Minute

// checkPR validates an app's pull_requests block.
func checkPR(a *AppConfig, p string, getenv func(string) string, bad func(keyPath, format string, args ...any)) {
	pr := a.PullRequests
	if pr == nil {
		return
	}
	switch pr.Provider {
	case "github", "gitlab":
	case "gitea":
		if pr.API == "" {
			bad(p+".pull_requests.api", "is required for gitea (e.g. https://gitea.example/api/v1)")
		}
	default:
		bad(p+".pull_requests.provider", "%q: want github, gitea or gitlab", pr.Provider)
	}
	switch {
	case pr.TokenEnv == "":
		bad(p+".pull_requests.token_env", "is required (a token that may set commit statuses and comment)")
	case getenv(pr.TokenEnv) == "":
		bad(p+".pull_requests.token_env", "environment variable %s is not set", pr.TokenEnv)
	}
	if pr.MinInterval == 0 {
		pr.MinInterval = Duration(30 * time.Second)
	}
}

// prPlanner posts the plans of one app's pull requests. One plan runs at a
// time per app; a pull request is planned at most once per MinInterval,
// the latest head winning.
type prPlanner struct {
	d       *Daemon
	r       *appRunner
	client  forge.Client
	limiter *forge.Limiter
	mu      sync.Mutex
	// latest is the newest event per pull request (Key) not yet planned.
	latest map[string]forge.PullRequest
	run    sync.Mutex
}

func (d *Daemon) newPRPlanner(r *appRunner) (*prPlanner, error) {
	pr := r.cfg.PullRequests
	if pr == nil {
		return nil, nil
	}
	c, err := forge.New(forge.Provider(pr.Provider), pr.API, d.deps.Getenv(pr.TokenEnv), "capstan/"+r.cfg.Name, &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("pull_requests: %w", err)
	}
	return &prPlanner{d: d, r: r, client: c, limiter: forge.NewLimiter(time.Duration(pr.MinInterval), 1000), latest: map[string]forge.PullRequest{}}, nil
}

// pullRequest handles a pull request event: every app following the base
// repository and branch with pull_requests set for that forge gets a plan,
// in the background. It returns the apps that will plan.
func (d *Daemon) pullRequest(pr forge.PullRequest) []string {
	var out []string
	for _, name := range d.order {
		r := d.apps[name]
		if r.prs == nil || string(pr.Provider) != r.cfg.PullRequests.Provider || pr.BaseRef != r.cfg.Branch || !pr.Matches(r.cfg.Repo) {
			continue
		}
		r.prs.enqueue(pr)
		out = append(out, name)
	}
	return out
}

// enqueue plans pr as soon as its rate limit allows, with the latest head
// seen by then.
func (p *prPlanner) enqueue(pr forge.PullRequest) {
	p.mu.Lock()
	_, due := p.latest[pr.Key()]
	p.latest[pr.Key()] = pr
	p.mu.Unlock()
	if !due {
		p.attempt(pr.Key())
	}
}

// attempt plans the latest head of key now if the limiter allows, else
// tries again when it says.
func (p *prPlanner) attempt(key string) {
	ok, at := p.limiter.Allow(key, time.Now())
	if !ok {
		wait := time.Until(at)
		if at.IsZero() {
			wait = time.Duration(p.r.cfg.PullRequests.MinInterval)
		}
		time.AfterFunc(wait, func() { p.attempt(key) })
		return
	}
	p.mu.Lock()
	pr, found := p.latest[key]
	delete(p.latest, key)
	p.mu.Unlock()
	if found {
		go p.plan(p.d.ctx(), pr)
	}
}

// plan checks out the pull request's head, loads its config, observes the
// hosts the app runs on now (read-only, over the app's own connections:
// a host the pull request adds is listed, not contacted) and posts the
// plan as a commit status and one comment. Secrets are masked.
func (p *prPlanner) plan(ctx context.Context, pr forge.PullRequest) {
	p.run.Lock()
	defer p.run.Unlock()
	ctx, cancel := context.WithTimeout(ctx, prTimeout)
	defer cancel()
	log := p.d.log.With("app", p.r.cfg.Name, "pull_request", pr.Number, "head", pr.HeadSHA[:min(12, len(pr.HeadSHA))])
	_ = p.client.SetStatus(ctx, pr, forge.Pending, "planning", "")
	c, changing, err := p.build(ctx, pr)
	red := p.redactor()
	c.Plan, c.Errors = red.String(c.Plan), red.Strings(c.Errors)
	if err != nil {
		c.Errors = append(c.Errors, red.String(err.Error()))
	}
	st, desc := forge.Success, planSummary(changing)
	if len(c.Errors) > 0 {
		st, desc = forge.Failure, fmt.Sprintf("%d configuration error(s)", len(c.Errors))
	}
	if err := p.client.UpsertComment(ctx, pr, c.Key, forge.RenderComment(c)); err != nil {
		log.Error("pull request comment", "err", err)
	}
	if err := p.client.SetStatus(ctx, pr, st, desc, ""); err != nil {
		log.Error("pull request status", "err", err)
	}
	log.Info("pull request planned", "state", st, "summary", desc)
}

// build makes the comment's content: the plan, or the config's errors,
// and how many hosts the plan changes.
func (p *prPlanner) build(ctx context.Context, pr forge.PullRequest) (c forge.Comment, changing int, err error) {
	c = forge.Comment{App: p.r.cfg.Name, SHA: pr.HeadSHA, Key: p.r.cfg.Name, Time: time.Now().UTC()}
	rev, err := p.r.repo.CheckoutRef(ctx, pr.HeadRef, pr.HeadSHA)
	if err != nil {
		return c, 0, fmt.Errorf("fetch %s: %w", pr.HeadRef, err)
	}
	cfg, err := kamal.LoadDir(filepath.Join(rev.Dir, p.r.cfg.Path), kamal.LoadOptions{
		Destination: p.r.cfg.Destination, Revision: rev.SHA, RevisionTime: rev.Time, FingerprintKey: p.d.deps.Key,
		SecretsEnv: p.d.secrets, LookupEnv: p.d.deps.LookupEnv,
	})
	if err != nil {
		var es kamal.Errors
		if errors.As(err, &es) {
			c.Errors = es.Lines()
			return c, 0, nil
		}
		return c, 0, err
	}
	app, known, err := p.r.prApp(p.d, cfg)
	if err != nil {
		return c, 0, err
	}
	if p.r.imageRepositoryIs(cfg.Repository) {
		// The version the pull request would deploy: pulled now, so the
		// merge does not wait for it.
		p.d.prepull(p.r, cfg.Version.Name(), fmt.Sprintf("pull request #%d", pr.Number))
	}
	var added []string
	app.Hosts = slices.DeleteFunc(app.Hosts, func(h *kamal.HostPlan) bool {
		if known[h.Host] {
			return false
		}
		added = append(added, h.Host)
		return true
	})
	plan, err := app.Plan(ctx)
	if err != nil {
		return c, 0, err
	}
	var b strings.Builder
	plan.WriteText(&b)
	for _, h := range added {
		fmt.Fprintf(&b, "  %s: new host, not observed (capstan connects only to the hosts the branch deploys to)\n", h)
	}
	c.Plan = b.String() // its "run JOB" lines are the jobs that would run
	for _, h := range plan.Hosts {
		if h.Error == "" && len(h.Steps) > 0 {
			changing++
		}
	}
	return c, changing, nil
}

// redactor masks the secrets the app's revision loaded and the daemon's
// own.
func (p *prPlanner) redactor() *redact.Redactor {
	p.r.mu.Lock()
	red := p.r.red
	p.r.mu.Unlock()
	if red == nil {
		red = redact.New()
	}
	var vals []string
	for _, v := range p.d.secrets {
		vals = append(vals, v)
	}
	return red.With(vals...)
}

// planSummary is the status line: how many hosts would change.
func planSummary(changing int) string {
	if changing == 0 {
		return "no host changes"
	}
	return fmt.Sprintf("%d host(s) change", changing)
}

// prApp builds an App of a pull request's config on the app's current
// pool (its SSH settings and keys, never the pull request's), and the
// hosts the app deploys to now.
func (r *appRunner) prApp(d *Daemon, cfg *kamal.Config) (*reconcile.App, map[string]bool, error) {
	r.mu.Lock()
	pool, red, last := r.pool, r.red, r.last
	r.mu.Unlock()
	if pool == nil || last == nil {
		return nil, nil, errors.New("the branch has not loaded yet; the plan needs its hosts")
	}
	app, err := d.deps.NewApp(cfg, pool, red)
	if err != nil {
		return nil, nil, err
	}
	app.Log = d.log.With("app", r.cfg.Name, "plan", "pull_request")
	app.ObserveTimeout = time.Duration(d.cfg.SSH.ObserveTimeout)
	known := map[string]bool{}
	for _, h := range last.Hosts {
		known[h.Host] = true
	}
	return app, known, nil
}
