// Package notify delivers capstan's events to people: a generic JSON
// webhook, Slack incoming webhooks and GitHub (commit statuses and
// deployments). Deliveries run in the background with retries and backoff,
// so a slow or dead receiver never slows a reconcile pass; each attempt's
// outcome is reported to a Recorder.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/internal/httpjson"
)

// Event is one thing that happened. JSON field names are the generic
// webhook's contract.
type Event struct {
	Event    string    `json:"event"` // deploy_succeeded, deploy_failed, deploy_interrupted, history_rewritten, drift_opened, drift_resolved, git_unreachable, git_recovered, drift_reminder
	App      string    `json:"app"`
	Host     string    `json:"host,omitempty"`
	Revision string    `json:"revision,omitempty"`
	Version  string    `json:"version,omitempty"`
	Kind     string    `json:"kind,omitempty"`
	Detail   string    `json:"detail"`
	Time     time.Time `json:"time"`
	// Repo and Environment serve the GitHub sink (not sent elsewhere).
	Repo        string `json:"-"`
	Environment string `json:"-"`
}

// Sink sends one event somewhere. Send returns an error to be retried.
type Sink interface {
	Name() string
	Send(ctx context.Context, e Event) error
}

// Recorder learns every delivery outcome (the state store).
type Recorder interface {
	RecordDelivery(sink string, e Event, attempts int, err error)
}

// Notifier fans events out to sinks from a bounded queue.
type Notifier struct {
	sinks   []Sink
	rec     Recorder
	log     *slog.Logger
	queue   chan Event
	retries int
	backoff time.Duration
	wg      sync.WaitGroup
	once    sync.Once
	stop    chan struct{}
}

// Options tune a Notifier; zero values take defaults.
type Options struct {
	Retries   int           // attempts per sink and event (default 5)
	Backoff   time.Duration // first retry delay, doubled each time (default 1 s)
	QueueSize int           // events waiting (default 1000); beyond, events are dropped and logged
}

// New starts a Notifier; Close stops it after delivering what is queued
// (bounded by ctx of Close).
func New(sinks []Sink, rec Recorder, log *slog.Logger, o Options) *Notifier {
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1000
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{sinks: sinks, rec: rec, log: log, queue: make(chan Event, o.QueueSize), retries: o.Retries, backoff: o.Backoff, stop: make(chan struct{})}
	n.wg.Add(1)
	go n.loop()
	return n
}

// Notify queues e without blocking.
func (n *Notifier) Notify(e Event) {
	if len(n.sinks) == 0 {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	select {
	case n.queue <- e:
	default:
		n.log.Error("alert queue full; event dropped", "event", e.Event, "app", e.App)
	}
}

// Close stops accepting events and waits for queued deliveries.
func (n *Notifier) Close() {
	n.once.Do(func() { close(n.queue) })
	n.wg.Wait()
}

func (n *Notifier) loop() {
	defer n.wg.Done()
	for e := range n.queue {
		var wg sync.WaitGroup
		for _, s := range n.sinks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.deliver(s, e)
			}()
		}
		wg.Wait()
	}
}

func (n *Notifier) deliver(s Sink, e Event) {
	var err error
	delay := n.backoff
	attempts := 0
	for attempts < n.retries {
		attempts++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = s.Send(ctx, e)
		cancel()
		if err == nil || errors.Is(err, errPermanent) {
			break
		}
		n.log.Warn("alert delivery failed; retrying", "sink", s.Name(), "event", e.Event, "attempt", attempts, "err", err)
		if attempts < n.retries {
			time.Sleep(delay)
			delay *= 2
		}
	}
	if n.rec != nil {
		n.rec.RecordDelivery(s.Name(), e, attempts, err)
	}
	if err != nil {
		n.log.Error("alert not delivered", "sink", s.Name(), "event", e.Event, "attempts", attempts, "err", err)
	}
}

// errPermanent marks a refusal that a retry cannot fix (4xx but 429).
var errPermanent = errors.New("permanent")

var client = &http.Client{Timeout: 10 * time.Second}

// postJSON posts body to url; a refusal a retry cannot fix is
// errPermanent.
func postJSON(ctx context.Context, url string, headers map[string]string, body any) ([]byte, error) {
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	out, err := httpjson.Do(ctx, client, http.MethodPost, url, h, body)
	var se *httpjson.StatusError
	if errors.As(err, &se) && !se.Retryable() || errors.Is(err, httpjson.ErrRequest) {
		return out, fmt.Errorf("%w: %v", errPermanent, err)
	}
	return out, err
}

// Webhook posts the event as JSON.
type Webhook struct{ URL string }

func (w Webhook) Name() string { return "webhook" }

func (w Webhook) Send(ctx context.Context, e Event) error {
	_, err := postJSON(ctx, w.URL, nil, e)
	return err
}

// Slack posts to an incoming webhook.
type Slack struct{ URL string }

func (s Slack) Name() string { return "slack" }

func (s Slack) Send(ctx context.Context, e Event) error {
	icon := map[string]string{"deploy_succeeded": ":white_check_mark:", "deploy_failed": ":x:", "deploy_interrupted": ":warning:", "history_rewritten": ":warning:", "drift_opened": ":warning:",
		"drift_resolved": ":large_green_circle:", "git_unreachable": ":warning:", "git_recovered": ":large_green_circle:"}[e.Event]
	text := fmt.Sprintf("%s *%s* %s", icon, e.App, strings.ReplaceAll(e.Event, "_", " "))
	if e.Host != "" {
		text += " on " + e.Host
	}
	if e.Version != "" {
		text += " (" + e.Version + ")"
	}
	text += ": " + e.Detail
	_, err := postJSON(ctx, s.URL, nil, map[string]string{"text": text})
	return err
}

// GitHub sets a commit status on the revision for every deploy event, and
// records a GitHub Deployment with its status per environment.
type GitHub struct {
	API   string // default https://api.github.com
	Token string
}

func (g GitHub) Name() string { return "github" }

func (g GitHub) Send(ctx context.Context, e Event) error {
	owner, repo, ok := ownerRepo(e.Repo)
	if !ok || e.Revision == "" {
		return nil // not a GitHub repository, or not about a revision
	}
	var state string
	switch e.Event {
	case "deploy_succeeded":
		state = "success"
	case "deploy_failed":
		state = "failure"
	case "deploy_started":
		state = "pending"
	default:
		return nil
	}
	api := strings.TrimRight(g.API, "/")
	if api == "" {
		api = "https://api.github.com"
	}
	h := map[string]string{"Authorization": "Bearer " + g.Token, "Accept": "application/vnd.github+json"}
	env := e.Environment
	if env == "" {
		env = "production"
	}
	desc := e.Detail
	if len(desc) > 140 {
		desc = desc[:139] + "…"
	}
	if _, err := postJSON(ctx, fmt.Sprintf("%s/repos/%s/%s/statuses/%s", api, owner, repo, e.Revision), h,
		map[string]string{"state": state, "context": "capstan/" + e.App, "description": desc}); err != nil {
		return fmt.Errorf("commit status: %w", err)
	}
	out, err := postJSON(ctx, fmt.Sprintf("%s/repos/%s/%s/deployments", api, owner, repo), h,
		map[string]any{"ref": e.Revision, "environment": env, "auto_merge": false, "required_contexts": []string{}, "description": "capstan " + e.App})
	if err != nil {
		return fmt.Errorf("deployment: %w", err)
	}
	var dep struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(out, &dep); err != nil || dep.ID == 0 {
		return fmt.Errorf("%w: deployment id missing in %q", errPermanent, out)
	}
	_, err = postJSON(ctx, fmt.Sprintf("%s/repos/%s/%s/deployments/%d/statuses", api, owner, repo, dep.ID), h,
		map[string]string{"state": state, "environment": env, "description": desc})
	if err != nil {
		return fmt.Errorf("deployment status: %w", err)
	}
	return nil
}

// ownerRepo reads owner and repository from a GitHub URL.
func ownerRepo(u string) (string, string, bool) {
	u = strings.TrimSuffix(strings.TrimSpace(u), ".git")
	for _, p := range []string{"https://github.com/", "http://github.com/", "git@github.com:", "ssh://git@github.com/"} {
		if rest, ok := strings.CutPrefix(u, p); ok {
			owner, repo, ok := strings.Cut(rest, "/")
			return owner, repo, ok && owner != "" && repo != "" && !strings.Contains(repo, "/")
		}
	}
	return "", "", false
}
