package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/notify"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/internal/testport"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/state"
)

// gitRepo makes a repository in a temporary directory with one commit on
// main that holds no Kamal config (so a pass of it is "invalid" and
// touches no host). It returns the repository's path.
func gitRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("no config here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Add("README"); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "t", Email: "t@example.com", When: time.Now()}
	if _, err := wt.Commit("first", &git.CommitOptions{Author: sig}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testDaemon is a Daemon of one app, "demo", following a local repository,
// built from capstan.yml text (extra is added at the top level) the way
// capstan serve builds it. Its SSH side fails the test if used: no host
// exists.
type testDaemon struct {
	*Daemon
	cfg  *Config
	repo string
	env  map[string]string
}

func newTestDaemon(t *testing.T, extra string, env map[string]string) *testDaemon {
	t.Helper()
	return newTestDaemonIn(t, t.TempDir(), extra, env)
}

// newTestDaemonIn is newTestDaemon with its capstan.yml and state (in
// dir/state) in dir, where a test may have left a state store.
func newTestDaemonIn(t *testing.T, dir, extra string, env map[string]string) *testDaemon {
	t.Helper()
	repo := gitRepo(t)
	yml := fmt.Sprintf("listen: %s\nstate_dir: %s\n%sapps:\n  - {name: demo, repo: %s, poll: 1s, drift_schedule: \"@every 1h\"}\n",
		freeAddr(t), filepath.Join(dir, "state"), extra, repo)
	p := filepath.Join(dir, "capstan.yml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return env[k] }
	cfg, err := LoadConfig(p, getenv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Deps{
		Getenv: getenv, Key: []byte("0123456789abcdef0123456789abcdef"),
		PoolKey: func(*kamal.Config) string { t.Error("PoolKey called: no host exists"); return "" },
		NewPool: func(*kamal.Config) (*hostexec.Pool, *redact.Redactor, error) {
			t.Error("NewPool called: no host exists")
			return nil, nil, fmt.Errorf("no hosts")
		},
		NewApp: func(*kamal.Config, *hostexec.Pool, *redact.Redactor) (*reconcile.App, error) {
			t.Error("NewApp called: no host exists")
			return nil, fmt.Errorf("no hosts")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return &testDaemon{Daemon: d, cfg: cfg, repo: repo, env: env}
}

// TestDaemon_AlertsPassesAKilledProcessLeftRunning: a pass the state store
// holds as running when the daemon starts (its process was killed) is
// marked interrupted and alerted once as deploy_interrupted.
func TestDaemon_AlertsPassesAKilledProcessLeftRunning(t *testing.T) {
	dir := t.TempDir()
	store, err := state.Open(filepath.Join(dir, "state", "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.StartPass(context.Background(), state.Pass{App: "demo", Revision: "abc123", Version: "v7", Trigger: "webhook"}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	events := make(chan notify.Event, 10)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e notify.Event
		_ = json.NewDecoder(r.Body).Decode(&e)
		events <- e
	}))
	defer sink.Close()
	newTestDaemonIn(t, dir, "alerts:\n  - {type: webhook, url: "+sink.URL+"}\n", nil)
	select {
	case e := <-events:
		if e.Event != "deploy_interrupted" || e.App != "demo" || e.Revision != "abc123" || e.Version != "v7" || !strings.Contains(e.Detail, "webhook pass") {
			t.Errorf("alert %+v, want deploy_interrupted of demo abc123 v7", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alert for the interrupted pass")
	}
	select {
	case e := <-events:
		t.Errorf("a second alert: %+v", e)
	case <-time.After(300 * time.Millisecond):
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string { return testport.Addr(t) }

// do sends a request to h and returns the status and body.
func do(t *testing.T, h http.Handler, method, path string, body io.Reader, header map[string]string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestDaemon_RunSyncsAndServes runs the daemon for real: it listens, is
// ready, syncs the local repository, records its commit as invalid (no
// config; no host touched) and stops when ctx is done.
func TestDaemon_RunSyncsAndServes(t *testing.T) {
	d := newTestDaemon(t, "", nil)
	if code, _ := do(t, d.Handler(), "GET", "/readyz", nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("readyz before Run: %d, want 503", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	base := "http://" + d.cfg.Listen
	deadline := time.Now().Add(20 * time.Second)
	var app struct {
		Revision    string `json:"revision"`
		LastOutcome string `json:"last_outcome"`
		LastError   string `json:"last_error"`
	}
	for app.LastOutcome != reconcile.OutcomeInvalid {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no invalid pass recorded: %+v", app)
		}
		time.Sleep(50 * time.Millisecond)
		resp, err := http.Get(base + "/api/v1/apps/demo")
		if err != nil {
			continue
		}
		_ = json.NewDecoder(resp.Body).Decode(&app)
		resp.Body.Close()
	}
	if len(app.Revision) != 40 || app.LastError == "" {
		t.Errorf("app after the pass: %+v", app)
	}
	resp, err := http.Get(base + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("readyz while running: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	code, body := do(t, d.Handler(), "GET", "/metrics", nil, nil)
	if code != 200 || !strings.Contains(body, `capstan_deploys_total{app="demo",result="failed"} 1`) {
		t.Errorf("/metrics (%d) lacks the failed deploy:\n%s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestDaemon_RunCannotListen(t *testing.T) {
	d := newTestDaemon(t, "", nil)
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := d.Run(context.Background()); err == nil {
		t.Error("Run on a taken address returned nil")
	}
}
