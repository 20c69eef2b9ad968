package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/internal/registry"
	"github.com/capstan-dev/capstan/internal/webhook"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/state"
)

// DefaultPrepullKeep is how many not-yet-deployed versions of an app stay
// pre-pulled on its hosts; pulling another evicts the oldest.
const DefaultPrepullKeep = 2

// prepullTimeout bounds one pre-pull (a big image on a slow link).
const prepullTimeout = 30 * time.Minute

// prepuller pulls an app's coming versions onto its hosts, one version at a
// time; a version already being pulled is not asked twice.
type prepuller struct {
	d    *Daemon
	r    *appRunner
	mu   sync.Mutex
	busy map[string]bool
	run  sync.Mutex
}

// errNotLoaded: the app's config has not loaded yet, so its hosts and
// image are unknown.
var errNotLoaded = errors.New("the app has not loaded its config yet")

// queue starts a pre-pull of version in the background (why names who
// asked). It reports false when that version is being pulled already.
func (p *prepuller) queue(version, why string) bool {
	p.mu.Lock()
	if p.busy[version] {
		p.mu.Unlock()
		return false
	}
	p.busy[version] = true
	p.mu.Unlock()
	go func() {
		defer func() { p.mu.Lock(); delete(p.busy, version); p.mu.Unlock() }()
		ctx, cancel := context.WithTimeout(p.r.ctx(p.d), prepullTimeout)
		defer cancel()
		if err := p.pull(ctx, version, why); err != nil {
			p.d.log.Warn("pre-pull not done", "app", p.r.cfg.Name, "version", version, "by", why, "err", err)
		}
	}()
	return true
}

// pull pre-pulls version on the hosts of the app's current config,
// evicting the oldest pre-pulled versions beyond the bound, and records
// the outcome per host.
func (p *prepuller) pull(ctx context.Context, version, why string) error {
	p.run.Lock()
	defer p.run.Unlock()
	app := p.r.loaded()
	if app == nil {
		return errNotLoaded
	}
	name := p.r.cfg.Name
	current := app.Config.Version.Name()
	if version == current {
		return nil // deployed (or deploying) already
	}
	recs, err := p.r.writes(p.d).Prepulls(ctx, name)
	if err != nil {
		return err
	}
	var older []string
	for _, v := range prepulledVersions(recs, current) {
		if v != version {
			older = append(older, v)
		}
	}
	var evict []string
	if keep := DefaultPrepullKeep - 1; len(older) > keep {
		evict = older[keep:]
	}
	log := p.d.log.With("app", name, "version", version, "by", why)
	log.Info("pre-pulling", "evict", evict)
	hosts, err := app.Prepull(ctx, version, reconcile.PrepullOptions{Evict: evict})
	if err != nil {
		return err
	}
	for _, v := range evict {
		_ = p.r.writes(p.d).ForgetPrepull(ctx, name, v)
	}
	for _, h := range hosts {
		_ = p.r.writes(p.d).RecordPrepull(context.WithoutCancel(ctx), state.Prepull{App: name, Version: version, Host: h.Host, Outcome: h.Outcome, Reason: h.Reason})
		log.Info("pre-pull", "host", h.Host, "outcome", h.Outcome, "reason", h.Reason, "took", h.Took.Round(time.Millisecond))
	}
	return nil
}

// ahead keeps the records of versions on a host ahead of their deploy:
// pulled or found present, and not current (deployed).
func ahead(recs []state.Prepull, current string) []state.Prepull {
	var out []state.Prepull
	for _, r := range recs {
		if r.Version != current && (r.Outcome == reconcile.PrepullPulled || r.Outcome == reconcile.PrepullPresent) {
			out = append(out, r)
		}
	}
	return out
}

// prepulledVersions are the versions pre-pulled on some host, newest
// first, but current (deployed: no longer ahead).
func prepulledVersions(recs []state.Prepull, current string) []string {
	var out []string
	for _, r := range ahead(recs, current) {
		if !slices.Contains(out, r.Version) {
			out = append(out, r.Version)
		}
	}
	return out
}

// prepulled returns the app's pre-pull records ahead of current.
func (d *Daemon) prepulled(ctx context.Context, app, current string) []state.Prepull {
	recs, err := d.store.Prepulls(ctx, app)
	if err != nil {
		return nil
	}
	return ahead(recs, current)
}

// apiPrepull is POST /api/v1/apps/{app}/prepull?version=V: CI calls it as
// soon as the image is pushed (token with the sync scope).
func (d *Daemon) apiPrepull(w http.ResponseWriter, r *http.Request) {
	a := d.app(w, r)
	if a == nil {
		return
	}
	v := r.URL.Query().Get("version")
	if !kamal.ValidVersion(v) {
		http.Error(w, fmt.Sprintf("version %q is neither an image tag nor a sha256:<64 hex> digest", v), http.StatusBadRequest)
		return
	}
	by := "token:" + caller(r).name
	queued := d.prepull(a, v, by)
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"app": a.cfg.Name, "version": v, "queued": queued, "by": by})
}

// registryWebhook is POST /webhooks/registry: a registry's push
// notifications (CNCF Distribution's envelope) with the token of
// webhooks.registry_token_env as "Authorization: Bearer TOKEN". Each
// tagged push of an app's image repository pre-pulls that tag.
func (d *Daemon) registryWebhook(reads chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxWebhookBody {
			tooLarge(w)
			return
		}
		want := d.webhookSecret("registry")
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if len(want) == 0 || !strings.EqualFold(scheme, "Bearer") || !sameSecret(got, string(want)) {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		body, ok := readWebhookBodyOrAnswer(w, r, reads)
		if !ok {
			return
		}
		pushes, err := webhook.ParseRegistry(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var queued []string
		for _, p := range pushes {
			for _, name := range d.order {
				a := d.apps[name]
				if a.imageRepository() == p.Repository && d.prepull(a, p.Tag, "registry") {
					queued = append(queued, fmt.Sprintf("%s:%s", name, p.Tag))
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"prepulling": queued})
	}
}

// imageRepository is the app's image path in its registry ("acme/app"),
// "" before its config loaded.
func (r *appRunner) imageRepository() string {
	app := r.loaded()
	if app == nil {
		return ""
	}
	_, repo, _ := registry.Split(app.Config.Repository)
	return repo
}

// imageRepositoryIs reports whether repo is the image repository of the
// app's current config.
func (r *appRunner) imageRepositoryIs(repo string) bool {
	app := r.loaded()
	return app != nil && app.Config.Repository == repo
}
