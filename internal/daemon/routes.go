package daemon

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capstan-dev/capstan/internal/forge"
	"github.com/capstan-dev/capstan/internal/webhook"
	"github.com/capstan-dev/capstan/reconcile"
)

// Bounds on webhook requests, which anyone who can reach the daemon may
// send: a body is at most maxWebhookBody, at most maxWebhookReads bodies
// are read (and held) at once, and reading one takes at most
// webhookReadTimeout. So a flood holds at most maxWebhookReads MiB, and
// the API, the status page and the loops keep answering.
const (
	maxWebhookBody  = 1 << 20
	maxWebhookReads = 16
)

// webhookReadTimeout bounds the read of one webhook body (a variable so a
// test can shorten it).
var webhookReadTimeout = 10 * time.Second

// routes is the HTTP surface. /healthz and /readyz are open; the webhooks
// are open and check their forge's signature; everything else requires an
// API token with the route's scope when any is configured.
func (d *Daemon) routes() http.Handler {
	api := func(h http.HandlerFunc) http.Handler { return d.private(h, false, ScopeRead) }
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
	reads := make(chan struct{}, maxWebhookReads)
	mux.HandleFunc("POST /webhooks/github", d.webhook("github", reads))
	mux.HandleFunc("POST /webhooks/gitlab", d.webhook("gitlab", reads))
	mux.HandleFunc("POST /webhooks/gitea", d.webhook("gitea", reads))
	mux.HandleFunc("POST /webhooks/registry", d.registryWebhook(reads))
	mux.Handle("POST /api/v1/apps/{app}/prepull", d.private(http.HandlerFunc(d.apiPrepull), false, ScopeSync))
	mux.Handle("POST /api/v1/apps/{app}/sync", d.private(http.HandlerFunc(d.apiSync), false, ScopeSync))
	mux.Handle("GET /api/v1/apps", api(d.apiApps))
	mux.Handle("GET /api/v1/apps/{app}", api(d.apiApp))
	mux.Handle("GET /api/v1/apps/{app}/history", api(d.apiHistory))
	// The logs take the page's basic auth too: the page links to them.
	mux.Handle("GET /api/v1/apps/{app}/logs", d.private(http.HandlerFunc(d.apiLogs), true, ScopeRead))
	mux.Handle("GET /api/v1/drift", api(d.apiDrift))
	mux.Handle("GET /{$}", d.private(http.HandlerFunc(d.statusPage), true, ScopeRead))
	return mux
}

// sameSecret compares two secrets in constant time (of their hashes, so
// the time does not tell the length either).
func sameSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// webhook handles a forge's push event: the signature (or token) is
// checked against the configured secret, then every app following the
// pushed repository and branch (or only ?app=NAME) is triggered. What can
// be refused before the body is read is: a declared length over
// maxWebhookBody (413), a missing secret or signature header, a wrong
// GitLab token (401). The body is read holding one of reads' slots, and
// cut at maxWebhookBody (413).
func (d *Daemon) webhook(kind string, reads chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxWebhookBody {
			tooLarge(w)
			return
		}
		secret, sig := d.webhookSecret(kind), webhookSignature(kind, r)
		if len(secret) == 0 || sig == "" {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		if kind == "gitlab" && webhook.VerifyGitLab(secret, sig) != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		body, ok := readWebhookBodyOrAnswer(w, r, reads)
		if !ok {
			return
		}
		var err error
		switch kind {
		case "github":
			err = webhook.VerifyGitHub(secret, sig, body)
		case "gitea":
			err = webhook.VerifyGitea(secret, sig, body)
		}
		if err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		if ev := r.Header.Get("X-GitHub-Event"); ev == "ping" {
			fmt.Fprintln(w, "pong")
			return
		}
		if d.handlePullRequest(w, r, kind, body) {
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
				d.request(a, reconcile.Request{Kind: reconcile.TriggerWebhook, By: sender(kind, push.Sender)})
				triggered = append(triggered, name)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"triggered": triggered})
	}
}

// handlePullRequest answers a pull request event (true), planning it for
// the apps that follow its base branch; other events are not its (false).
func (d *Daemon) handlePullRequest(w http.ResponseWriter, r *http.Request, kind string, body []byte) bool {
	p := forge.Provider(kind)
	ev := forge.EventName(p, r.Header)
	if ev != "pull_request" && ev != "pull_request_sync" && ev != "Merge Request Hook" {
		return false
	}
	pr, ok, err := forge.ParsePullRequest(p, ev, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return true
	}
	var apps []string
	if ok {
		apps = d.pullRequest(pr)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"planning": apps})
	return true
}

// sender names who pushed for the pass record: "github:ada"; "" when the
// payload does not say. Only what a name may hold is kept.
func sender(kind, login string) string {
	if login == "" {
		return ""
	}
	clean := strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return -1
	}, login)
	return kind + ":" + clean[:min(len(clean), 64)]
}

// webhookSecret is the configured secret (GitLab: token) of a forge; empty
// when none is set.
func (d *Daemon) webhookSecret(kind string) []byte {
	wh := d.cfg.Webhooks
	name := map[string]string{"github": wh.GitHubSecretEnv, "gitlab": wh.GitLabTokenEnv, "gitea": wh.GiteaSecretEnv, "registry": wh.RegistryTokenEnv}[kind]
	if name == "" {
		return nil
	}
	return []byte(d.deps.Getenv(name))
}

// webhookSignature is the header that carries a forge's signature (GitLab:
// its token); "" when absent.
func webhookSignature(kind string, r *http.Request) string {
	switch kind {
	case "github":
		return r.Header.Get("X-Hub-Signature-256")
	case "gitlab":
		return r.Header.Get("X-Gitlab-Token")
	}
	return cmp.Or(r.Header.Get("X-Gitea-Signature"), r.Header.Get("X-Forgejo-Signature"))
}

// readWebhookBody reads at most maxWebhookBody bytes of r's body (a
// longer one is an *http.MaxBytesError, and the connection is closed
// after the answer), within webhookReadTimeout, holding a slot of reads
// meanwhile: it waits for one while the request lasts.
func readWebhookBody(w http.ResponseWriter, r *http.Request, reads chan struct{}) ([]byte, error) {
	select {
	case reads <- struct{}{}:
		defer func() { <-reads }()
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	// Not every ResponseWriter can set a deadline (a test recorder);
	// the server's own timeouts bound the read then.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(webhookReadTimeout))
	return io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
}

// readWebhookBodyOrAnswer is readWebhookBody that answers a failed read
// itself (413 for a body over the limit, else 400) and then reports false.
func readWebhookBodyOrAnswer(w http.ResponseWriter, r *http.Request, reads chan struct{}) ([]byte, bool) {
	body, err := readWebhookBody(w, r, reads)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			tooLarge(w)
		} else {
			http.Error(w, "cannot read the body", http.StatusBadRequest)
		}
		return nil, false
	}
	return body, true
}

// tooLarge answers 413 and closes the connection, so the rest of the body
// is not read.
func tooLarge(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
}
