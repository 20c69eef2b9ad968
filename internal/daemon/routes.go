package daemon

import (
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

// routes is the HTTP surface.
func (d *Daemon) routes() http.Handler {
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
func (d *Daemon) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if d.cfg.APITokenEnv != "" {
			want := d.deps.Getenv(d.cfg.APITokenEnv)
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
