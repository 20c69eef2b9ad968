package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type recorder struct {
	mu   sync.Mutex
	logs []string
}

func (r *recorder) RecordDelivery(sink string, e Event, attempts int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := sink + " " + e.Event + " ok"
	if err != nil {
		s = sink + " " + e.Event + " failed"
	}
	r.logs = append(r.logs, s)
	_ = attempts
}

func TestWebhook_RetriedUntilUpAndNeverBlocks(t *testing.T) {
	var calls atomic.Int32
	var got Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&got)
	}))
	defer srv.Close()
	rec := &recorder{}
	n := New([]Sink{Webhook{URL: srv.URL}}, rec, nil, Options{Backoff: 10 * time.Millisecond})
	start := time.Now()
	n.Notify(Event{Event: "drift_opened", App: "a", Host: "h", Kind: "stopped", Detail: "d", Revision: "abc"})
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("Notify blocked for %s", d)
	}
	n.Close()
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 3 (2 failures then success)", calls.Load())
	}
	if got.Event != "drift_opened" || got.App != "a" || got.Host != "h" || got.Kind != "stopped" || got.Revision != "abc" || got.Time.IsZero() {
		t.Errorf("payload %+v", got)
	}
	if strings.Join(rec.logs, ",") != "webhook drift_opened ok" {
		t.Errorf("recorded %v", rec.logs)
	}
}

func TestWebhook_PermanentFailureNotRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer srv.Close()
	rec := &recorder{}
	n := New([]Sink{Webhook{URL: srv.URL}}, rec, nil, Options{Backoff: time.Millisecond})
	n.Notify(Event{Event: "deploy_failed", App: "a"})
	n.Close()
	if calls.Load() != 1 || strings.Join(rec.logs, ",") != "webhook deploy_failed failed" {
		t.Errorf("calls %d, recorded %v", calls.Load(), rec.logs)
	}
}

func TestGitHub_RequestShapes(t *testing.T) {
	var mu sync.Mutex
	var reqs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("%s: body not JSON: %s", r.URL.Path, b)
		}
		if r.Header.Get("Authorization") != "Bearer tok" || r.Method != http.MethodPost {
			t.Errorf("%s %s auth %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		mu.Lock()
		st, _ := body["state"].(string)
		reqs = append(reqs, r.URL.Path+" "+st)
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/deployments"):
			if body["ref"] != "abc123" || body["environment"] != "production" {
				t.Errorf("deployment body %v", body)
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id":42}`))
		case strings.Contains(r.URL.Path, "/statuses/"):
			if body["context"] != "capstan/myapp" {
				t.Errorf("status body %v", body)
			}
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer srv.Close()
	n := New([]Sink{GitHub{API: srv.URL, Token: "tok"}}, nil, nil, Options{Backoff: time.Millisecond})
	n.Notify(Event{Event: "deploy_failed", App: "myapp", Revision: "abc123", Repo: "git@github.com:acme/myapp.git", Detail: "health check failed"})
	n.Notify(Event{Event: "drift_opened", App: "myapp", Revision: "abc123", Repo: "git@github.com:acme/myapp.git"})
	n.Close()
	want := "/repos/acme/myapp/statuses/abc123 failure,/repos/acme/myapp/deployments ,/repos/acme/myapp/deployments/42/statuses failure"
	if got := strings.Join(reqs, ","); got != want {
		t.Errorf("requests:\n%s\nwant:\n%s", got, want)
	}
}
