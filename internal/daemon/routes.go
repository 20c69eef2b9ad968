package daemon

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capstan-dev/capstan/internal/webhook"
	"github.com/capstan-dev/capstan/reconcile"
)

// maxWebhookBody bounds webhook and API request bodies.
const maxWebhookBody = 1 << 20

// routes is the HTTP surface. /healthz and /readyz are open; the webhooks
// are open and check their forge's signature; everything else requires the
// API token when one is configured.
func (d *Daemon) routes() http.Handler {
	api := func(h http.HandlerFunc) http.Handler { return d.private(h, false) }
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
	mux.Handle("GET /metrics", api(promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}).ServeHTTP))
	mux.HandleFunc("POST /webhooks/github", d.webhook("github"))
	mux.HandleFunc("POST /webhooks/gitlab", d.webhook("gitlab"))
	mux.HandleFunc("POST /webhooks/gitea", d.webhook("gitea"))
	mux.Handle("POST /api/v1/apps/{app}/sync", api(d.apiSync))
	mux.Handle("GET /api/v1/apps", api(d.apiApps))
	mux.Handle("GET /api/v1/apps/{app}", api(d.apiApp))
	mux.Handle("GET /api/v1/apps/{app}/history", api(d.apiHistory))
	mux.Handle("GET /api/v1/drift", api(d.apiDrift))
	mux.Handle("GET /{$}", d.private(http.HandlerFunc(d.statusPage), true))
	return mux
}

// authorized reports whether r carries the API token: as
// "Authorization: Bearer TOKEN" or, when basic is true, as the password of
// HTTP basic auth (any user name, so a browser can log in). With no token
// configured every request is authorized.
func (d *Daemon) authorized(r *http.Request, basic bool) bool {
	if d.token == "" {
		return true
	}
	if scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		return sameSecret(cred, d.token)
	}
	if _, pw, ok := r.BasicAuth(); ok && basic {
		return sameSecret(pw, d.token)
	}
	return false
}

// sameSecret compares two secrets in constant time (of their hashes, so
// the time does not tell the length either).
func sameSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// private serves h only to requests that carry the token (authorized);
// others get 401 with a challenge for the scheme the route takes: Basic
// for the status page (basic true), Bearer for the API and the metrics.
func (d *Daemon) private(h http.Handler, basic bool) http.Handler {
	challenge := `Bearer realm="capstan"`
	if basic {
		challenge = `Basic realm="capstan"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.authorized(r, basic) {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// webhook handles a forge's push event: the signature (or token) is
// checked against the configured secret, then every app following the
// pushed repository and branch (or only ?app=NAME) is triggered.
func (d *Daemon) webhook(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		wh := d.cfg.Webhooks
		getenv := d.deps.Getenv
		switch kind {
		case "github":
			err = webhook.VerifyGitHub([]byte(getenv(wh.GitHubSecretEnv)), r.Header.Get("X-Hub-Signature-256"), body)
		case "gitlab":
			err = webhook.VerifyGitLab([]byte(getenv(wh.GitLabTokenEnv)), r.Header.Get("X-Gitlab-Token"))
		case "gitea":
			sig := r.Header.Get("X-Gitea-Signature")
			if sig == "" {
				sig = r.Header.Get("X-Forgejo-Signature")
			}
			err = webhook.VerifyGitea([]byte(getenv(wh.GiteaSecretEnv)), sig, body)
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
