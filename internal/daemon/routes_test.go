package daemon

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRoutes_HealthAndUnknownApp(t *testing.T) {
	d := newTestDaemon(t, "", nil)
	h := d.Handler()
	for _, c := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/readyz", 503, "starting"},
		{"GET", "/api/v1/apps", 200, `"app": "demo"`},
		{"GET", "/api/v1/apps/demo", 200, `"branch": "main"`},
		{"GET", "/api/v1/apps/demo/history", 200, "null"},
		{"GET", "/api/v1/drift", 200, "null"},
		{"GET", "/api/v1/apps/nope", 404, "no such app"},
		{"GET", "/api/v1/apps/nope/history", 404, "no such app"},
		{"POST", "/api/v1/apps/nope/sync", 404, "no such app"},
		{"POST", "/api/v1/apps/demo/sync?force=1", 202, `"force":true`},
		{"GET", "/", 200, `id="app-demo"`},
		{"GET", "/metrics", 200, `capstan_drift_open{app="demo"} 0`},
		{"GET", "/nothing-here", 404, ""},
		{"DELETE", "/api/v1/apps/demo", 405, ""},
	} {
		code, body := do(t, h, c.method, c.path, nil, nil)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s %s: %d %q, want %d with %q", c.method, c.path, code, body, c.code, c.body)
		}
	}
}

func TestRoutes_PrivateByDefault(t *testing.T) {
	d := newTestDaemon(t, "api_token_env: TOK\n", map[string]string{"TOK": "s3cret"})
	h := d.Handler()
	basic := func(user, pw string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
	}
	for _, path := range []string{"/", "/api/v1/apps", "/api/v1/apps/demo", "/api/v1/apps/demo/history", "/api/v1/drift", "/metrics", "/api/v1/apps/nope"} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer ", "s3cret", "Bearer s3cret2", "Bearer s3cre", basic("x", "wrong")} {
			code, body := do(t, h, "GET", path, nil, map[string]string{"Authorization": auth})
			if code != http.StatusUnauthorized || strings.Contains(body, "demo") {
				t.Errorf("GET %s, Authorization %q: %d, want 401", path, auth, code)
			}
		}
		if code, _ := do(t, h, "GET", path, nil, map[string]string{"Authorization": "Bearer s3cret"}); code != 200 && !(path == "/api/v1/apps/nope" && code == 404) {
			t.Errorf("GET %s with the token: %d", path, code)
		}
	}
	if code, _ := do(t, h, "POST", "/api/v1/apps/demo/sync", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("sync without token: %d, want 401", code)
	}
	if code, _ := do(t, h, "POST", "/api/v1/apps/demo/sync", nil, map[string]string{"Authorization": "bearer s3cret"}); code != http.StatusAccepted {
		t.Errorf("sync with the token: %d, want 202", code)
	}
	// The page takes basic auth (any user, the token as password) and
	// asks a browser for it; the API and the metrics do not.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if got := rec.Header().Get("WWW-Authenticate"); got != `Basic realm="capstan"` {
		t.Errorf("page 401 challenge %q, want Basic", got)
	}
	if code, body := do(t, h, "GET", "/", nil, map[string]string{"Authorization": basic("anyone", "s3cret")}); code != 200 || !strings.Contains(body, `id="app-demo"`) {
		t.Errorf("page with basic auth: %d", code)
	}
	for _, path := range []string{"/api/v1/apps", "/metrics"} {
		if code, _ := do(t, h, "GET", path, nil, map[string]string{"Authorization": basic("anyone", "s3cret")}); code != http.StatusUnauthorized {
			t.Errorf("GET %s with basic auth: %d, want 401 (bearer only)", path, code)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="capstan"` {
			t.Errorf("%s 401 challenge %q, want Bearer", path, got)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := do(t, h, "GET", path, nil, nil); code == http.StatusUnauthorized {
			t.Errorf("%s needs no token: %d", path, code)
		}
	}
}

func TestRoutes_NoTokenOnLoopbackIsOpen(t *testing.T) {
	d := newTestDaemon(t, "", nil)
	for _, path := range []string{"/", "/api/v1/apps", "/metrics"} {
		if code, _ := do(t, d.Handler(), "GET", path, nil, nil); code != 200 {
			t.Errorf("GET %s without a configured token: %d", path, code)
		}
	}
}

// pushBody is a GitHub push of main for the repository at url.
func pushBody(url string) []byte {
	return []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":"%s","repository":{"clone_url":%q}}`, strings.Repeat("a", 40), url))
}

func TestRoutes_WebhookSignature(t *testing.T) {
	d := newTestDaemon(t, "webhooks: {github_secret_env: GH, gitlab_token_env: GL, gitea_secret_env: GT}\n",
		map[string]string{"GH": "gh-secret", "GL": "gl-token", "GT": "gt-secret"})
	h := d.Handler()
	body := pushBody(d.repo)
	sign := func(secret string) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		return hex.EncodeToString(m.Sum(nil))
	}
	for _, c := range []struct {
		path   string
		header map[string]string
	}{
		{"/webhooks/github", nil},
		{"/webhooks/github", map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)}},
		{"/webhooks/github", map[string]string{"X-Hub-Signature-256": "sha256=" + sign("other")}},
		{"/webhooks/gitlab", map[string]string{"X-Gitlab-Token": "wrong"}},
		{"/webhooks/gitea", map[string]string{"X-Gitea-Signature": sign("gh-secret")}},
	} {
		if code, resp := do(t, h, "POST", c.path, bytes.NewReader(body), c.header); code != http.StatusUnauthorized || strings.Contains(resp, "triggered") {
			t.Errorf("%s %v: %d %q, want 401", c.path, c.header, code, resp)
		}
	}
	for _, c := range []struct {
		path   string
		header map[string]string
	}{
		{"/webhooks/github", map[string]string{"X-Hub-Signature-256": "sha256=" + sign("gh-secret")}},
		{"/webhooks/gitlab", map[string]string{"X-Gitlab-Token": "gl-token"}},
		{"/webhooks/gitea", map[string]string{"X-Forgejo-Signature": sign("gt-secret")}},
	} {
		if code, resp := do(t, h, "POST", c.path, bytes.NewReader(body), c.header); code != 200 || !strings.Contains(resp, `"triggered":["demo"]`) {
			t.Errorf("%s: %d %q, want demo triggered", c.path, code, resp)
		}
	}
	// A signed push of another repository triggers nothing.
	other := pushBody("https://example.com/other.git")
	m := hmac.New(sha256.New, []byte("gh-secret"))
	m.Write(other)
	code, resp := do(t, h, "POST", "/webhooks/github", bytes.NewReader(other), map[string]string{"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(m.Sum(nil))})
	if code != 200 || !strings.Contains(resp, `"triggered":null`) {
		t.Errorf("other repository: %d %q", code, resp)
	}
}

func TestRoutes_WebhookWithoutSecretRefuses(t *testing.T) {
	// No webhook secret configured: every signature is wrong.
	d := newTestDaemon(t, "", nil)
	m := hmac.New(sha256.New, nil)
	body := pushBody(d.repo)
	m.Write(body)
	code, _ := do(t, d.Handler(), "POST", "/webhooks/github", bytes.NewReader(body), map[string]string{"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(m.Sum(nil))})
	if code != http.StatusUnauthorized {
		t.Errorf("webhook with an empty secret: %d, want 401", code)
	}
}
