package daemon

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestTokens_Scopes: each named token does what its scopes allow and
// nothing else (403 naming the missing scope), the pass request carries
// the token's name, and the legacy api_token_env still has every scope.
func TestTokens_Scopes(t *testing.T) {
	d := newTestDaemon(t, `api_token_env: ADMIN
api_tokens:
  - {name: ci, token_env: CI_TOKEN, scopes: [sync]}
  - {name: viewer, token_env: VIEW_TOKEN, scopes: [read]}
  - {name: ops, token_env: OPS_TOKEN, scopes: [sync, override, read]}
`, map[string]string{"ADMIN": "admin-secret", "CI_TOKEN": "ci-secret", "VIEW_TOKEN": "view-secret", "OPS_TOKEN": "ops-secret"})
	h := d.Handler()
	bearer := func(s string) map[string]string { return map[string]string{"Authorization": "Bearer " + s} }
	for _, c := range []struct {
		method, path, token string
		code                int
		body                string
	}{
		{"POST", "/api/v1/apps/demo/sync", "ci-secret", 202, `"by":"token:ci"`},
		{"POST", "/api/v1/apps/demo/sync?override=1", "ci-secret", 403, "token ci lacks the override scope"},
		{"GET", "/api/v1/apps/demo", "ci-secret", 403, "token ci lacks the read scope"},
		{"GET", "/metrics", "ci-secret", 403, "read scope"},
		{"GET", "/api/v1/apps/demo", "view-secret", 200, `"app": "demo"`},
		{"POST", "/api/v1/apps/demo/sync", "view-secret", 403, "token viewer lacks the sync scope"},
		{"POST", "/api/v1/apps/demo/sync?override=1", "ops-secret", 202, `"override":true`},
		{"GET", "/api/v1/apps/demo", "ops-secret", 200, `"app": "demo"`},
		{"POST", "/api/v1/apps/demo/sync?override=1", "admin-secret", 202, `"by":"token:api"`},
		{"GET", "/api/v1/apps/demo", "nobody", 401, "unauthorized"},
	} {
		code, body := do(t, h, c.method, c.path, nil, bearer(c.token))
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s %s as %s: %d %q, want %d with %q", c.method, c.path, c.token, code, body, c.code, c.body)
		}
	}
	if code, _ := do(t, h, "GET", "/", nil, map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("x:view-secret"))}); code != http.StatusOK {
		t.Errorf("the page with a read token as the basic-auth password: %d", code)
	}
}

func TestTokens_Config(t *testing.T) {
	p := writeFile(t, `listen: 0.0.0.0:9740
api_tokens:
  - {name: ci, token_env: CI_TOKEN, scopes: [sync, deploy]}
  - {name: ci, token_env: UNSET, scopes: []}
  - {name: "Bad Name", token_env: CI_TOKEN, scopes: [read]}
apps:
  - {name: a, repo: /r}
`)
	_, err := LoadConfig(p, func(k string) string { return map[string]string{"CI_TOKEN": "x"}[k] })
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{
		p + `:3: api_tokens[0].scopes: "deploy": want read, sync, override`,
		p + `:4: api_tokens[1].name: "ci" is used twice`,
		p + ":4: api_tokens[1].token_env: environment variable UNSET is not set",
		p + ":4: api_tokens[1].scopes: at least one of read, sync, override is required",
		p + `:5: api_tokens[2].name: "Bad Name" must be`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "listen") {
		t.Errorf("named tokens guard a public listen address, yet: %v", err)
	}
	// Two tokens with one secret could not be told apart in the history.
	cfg := &Config{APITokens: []APIToken{{Name: "a", TokenEnv: "A", Scopes: []string{"read"}}, {Name: "b", TokenEnv: "B", Scopes: []string{"sync"}}}}
	if _, err := loadTokens(cfg, func(string) string { return "same" }); err == nil || !strings.Contains(err.Error(), "same secret") {
		t.Errorf("two tokens with one secret: %v", err)
	}
}

// TestSender: a webhook's sender is recorded as forge:login, cut to what
// a login may hold.
func TestSender(t *testing.T) {
	for _, c := range []struct{ kind, login, want string }{
		{"github", "ada", "github:ada"},
		{"gitlab", "grace.h", "gitlab:grace.h"},
		{"gitea", "", ""},
		{"github", "eve\n<script>; rm -rf /", "github:evescriptrm-rf"},
		{"github", strings.Repeat("x", 300), "github:" + strings.Repeat("x", 64)},
	} {
		if got := sender(c.kind, c.login); got != c.want {
			t.Errorf("sender(%q, %q) = %q, want %q", c.kind, c.login, got, c.want)
		}
	}
}
