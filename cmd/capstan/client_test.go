package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/daemon"
	"github.com/capstan-dev/capstan/state"
)

// TestClient_AgainstDaemonAPI runs status, history and drift against the
// daemon's real HTTP handlers and store.
func TestClient_AgainstDaemonAPI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(filepath.Join(stateDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ rev, outcome string }{{"aaaaaaaaaaaaaaaa", state.OutcomeSucceeded}, {"bbbbbbbbbbbbbbbb", state.OutcomeFailed}} {
		id, err := store.StartPass(ctx, state.Pass{App: "demo", Revision: p.rev, Version: p.rev[:2], Trigger: "poll", Started: time.Now().Add(-time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.FinishPass(ctx, id, p.outcome, "", "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := store.SyncDrift(ctx, "demo", []state.Scope{{Host: "10.0.0.1"}}, []state.DriftItem{{Host: "10.0.0.1", Kind: "stopped", Subject: "web", Detail: "testapp-web-v1 is exited"}}); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "capstan.yml")
	if err := os.WriteFile(cfgPath, []byte("state_dir: "+stateDir+"\napi_token_env: TOK\napps:\n  - {name: demo, repo: /r}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"TOK": "tok"}[k] }
	cfg, err := daemon.LoadConfig(cfgPath, getenv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(ctx, cfg, daemon.Deps{Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()

	cli := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		err := run(ctx, args, &out, &errb)
		code := exitCode(err, &errb)
		return out.String() + errb.String(), code
	}
	out, code := cli("status", "--server", srv.URL, "--token", "tok")
	if code != 0 || !strings.Contains(out, "demo") || !strings.Contains(out, "drift demo 10.0.0.1 stopped: testapp-web-v1 is exited") {
		t.Errorf("status (%d):\n%s", code, out)
	}
	out, code = cli("history", "demo", "--server", srv.URL, "--token", "tok")
	if code != 0 || strings.Index(out, "bbbbbbbbbbbb") > strings.Index(out, "aaaaaaaaaaaa") || !strings.Contains(out, "failed") {
		t.Errorf("history (%d), want newest first:\n%s", code, out)
	}
	out, code = cli("drift", "--server", srv.URL, "--token", "tok")
	if code != 0 || !strings.Contains(out, "stopped") {
		t.Errorf("drift (%d):\n%s", code, out)
	}
	out, code = cli("status", "--server", srv.URL, "--token", "wrong")
	if code != exitFailure || !strings.Contains(out, "401") || !strings.Contains(out, "CAPSTAN_API_TOKEN") {
		t.Errorf("wrong token (%d):\n%s", code, out)
	}
}
