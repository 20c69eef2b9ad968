package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/state"
)

// TestPrepull_Routes: the registry's notifications need their token; the
// CI's prepull call needs the sync scope and a well-formed version; an
// image repository is matched without its registry host.
func TestPrepull_Routes(t *testing.T) {
	d := newTestDaemon(t, `webhooks: {registry_token_env: REG_TOKEN}
api_tokens:
  - {name: ci, token_env: CI_TOKEN, scopes: [sync]}
  - {name: viewer, token_env: VIEW_TOKEN, scopes: [read]}
`, map[string]string{"REG_TOKEN": "reg-secret", "CI_TOKEN": "ci-secret", "VIEW_TOKEN": "view-secret"})
	h := d.Handler()
	for _, c := range []struct {
		method, path, auth string
		body               string
		code               int
		want               string
	}{
		{"POST", "/webhooks/registry", "", `{"events":[]}`, 401, "invalid token"},
		{"POST", "/webhooks/registry", "Bearer wrong", `{"events":[]}`, 401, "invalid token"},
		{"POST", "/webhooks/registry", "Bearer reg-secret", `not json`, 400, "unreadable"},
		{"POST", "/webhooks/registry", "Bearer reg-secret", `{"events":[]}`, 200, `"prepulling":null`},
		{"POST", "/api/v1/apps/demo/prepull?version=v7", "Bearer view-secret", "", 403, "sync scope"},
		{"POST", "/api/v1/apps/demo/prepull?version=$(reboot)", "Bearer ci-secret", "", 400, "neither an image tag"},
		{"POST", "/api/v1/apps/demo/prepull?version=v7", "Bearer ci-secret", "", 202, `"by":"token:ci"`},
	} {
		code, body := do(t, h, c.method, c.path, strings.NewReader(c.body), map[string]string{"Authorization": c.auth})
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s (%s): %d %q, want %d with %q", c.method, c.path, c.auth, code, body, c.code, c.want)
		}
	}
	r := d.apps["demo"]
	for idle := false; !idle; { // the queued pre-pull finds nothing loaded and ends
		r.pre.mu.Lock()
		idle = len(r.pre.busy) == 0
		r.pre.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	for _, c := range []struct{ repo, want string }{
		{"registry.example.com/acme/demo", "acme/demo"}, {"localhost:5000/demo", "demo"}, {"acme/demo", "acme/demo"}, {"10.0.0.1:5000/x/y", "x/y"},
	} {
		r.mu.Lock()
		r.last = &reconcile.App{Config: &kamal.Config{Repository: c.repo}}
		r.mu.Unlock()
		if got := r.imageRepository(); got != c.want {
			t.Errorf("imageRepository of %s = %q, want %q", c.repo, got, c.want)
		}
	}
	r.mu.Lock()
	r.last = nil
	r.mu.Unlock()
}

// TestPrepull_Bound: at most DefaultPrepullKeep versions stay ahead of
// the deployed one; the oldest goes first; the deployed one never counts.
func TestPrepull_Bound(t *testing.T) {
	recs := []state.Prepull{
		{Version: "v9", Outcome: reconcile.PrepullPulled}, {Version: "v9", Outcome: reconcile.PrepullPulled, Host: "h2"},
		{Version: "v8", Outcome: reconcile.PrepullSkipped},
		{Version: "v7", Outcome: reconcile.PrepullPresent},
		{Version: "v5", Outcome: reconcile.PrepullPulled},
		{Version: "v6", Outcome: reconcile.PrepullPulled},
	}
	if got := strings.Join(prepulledVersions(recs, "v5"), ","); got != "v9,v7,v6" {
		t.Errorf("ahead of v5: %s, want v9,v7,v6 (v8 was skipped, v5 is deployed)", got)
	}
}
