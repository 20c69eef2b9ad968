package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
)

// fakeLogs answers Logs with fixed lines and a warning, and records the
// options it was asked with.
type fakeLogs struct {
	asked []reconcile.LogOptions
	err   error
}

func (f *fakeLogs) Logs(_ context.Context, o reconcile.LogOptions, w io.Writer) error {
	f.asked = append(f.asked, o)
	if f.err != nil {
		return f.err
	}
	o.Warn("10.0.0.2", fmt.Errorf("observe 10.0.0.2:\nhost unreachable"))
	_, err := io.WriteString(w, "10.0.0.1 web | GET / 200\n10.0.0.3 worker | SECRET=[REDACTED]\n")
	return err
}

func TestAPILogs(t *testing.T) {
	d := newTestDaemon(t, "api_token_env: TOK\n", map[string]string{"TOK": "s3cret"})
	fake := &fakeLogs{}
	d.logsOf = func(a *appRunner) logSource {
		if a.cfg.Name != "demo" {
			t.Errorf("logs of %s", a.cfg.Name)
		}
		return fake
	}
	h := d.Handler()
	auth := map[string]string{"Authorization": "Bearer s3cret"}
	if code, body := do(t, h, "GET", "/api/v1/apps/demo/logs", nil, nil); code != http.StatusUnauthorized || strings.Contains(body, "GET /") {
		t.Errorf("logs without the token: %d %q", code, body)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/apps/demo/logs?role=web,worker&host=10.0.0.1&since=10m&lines=500", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != "10.0.0.1 web | GET / 200\n10.0.0.3 worker | SECRET=[REDACTED]\n" ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") || rec.Header().Get("X-Capstan-Warning") != "10.0.0.2: observe 10.0.0.2: host unreachable" {
		t.Errorf("logs: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	o := fake.asked[0]
	if !slices.Equal(o.Roles, []string{"web", "worker"}) || !slices.Equal(o.Hosts, []string{"10.0.0.1"}) || o.Since != 10*time.Minute || o.Lines != 500 || o.Follow {
		t.Errorf("asked %+v", o)
	}
	// Defaults; the page's basic auth works too (the page links here).
	req = httptest.NewRequest("GET", "/api/v1/apps/demo/logs", nil)
	req.SetBasicAuth("me", "s3cret")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if o := fake.asked[1]; rec.Code != 200 || o.Lines != defaultLogLines || o.Since != 0 || o.Roles != nil || o.Hosts != nil {
		t.Errorf("defaults: %d %+v", rec.Code, o)
	}
	for _, q := range []string{"lines=0", "lines=10001", "lines=x", "since=x", "since=-1m"} {
		if code, _ := do(t, h, "GET", "/api/v1/apps/demo/logs?"+q, nil, auth); code != http.StatusBadRequest {
			t.Errorf("?%s: %d, want 400", q, code)
		}
	}
	if len(fake.asked) != 2 {
		t.Errorf("bad queries reached Logs: %d calls", len(fake.asked))
	}
	if code, _ := do(t, h, "GET", "/api/v1/apps/nope/logs", nil, auth); code != http.StatusNotFound {
		t.Errorf("unknown app: %d", code)
	}
	fake.err = fmt.Errorf("role %q: %w", "nope", reconcile.ErrUnknownTarget)
	if code, body := do(t, h, "GET", "/api/v1/apps/demo/logs?role=nope", nil, auth); code != http.StatusBadRequest || !strings.Contains(body, "nope") {
		t.Errorf("unknown role: %d %q", code, body)
	}
	if code, body := do(t, h, "GET", "/", nil, auth); code != 200 || !strings.Contains(body, `href="/api/v1/apps/demo/logs"`) {
		t.Errorf("the status page does not link to the logs (%d)", code)
	}
}

// TestAPILogs_BeforeAnyRevision: no App loaded yet (the real logsOf).
func TestAPILogs_BeforeAnyRevision(t *testing.T) {
	d := newTestDaemon(t, "", nil)
	if code, _ := do(t, d.Handler(), "GET", "/api/v1/apps/demo/logs", nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("logs before any revision loaded: %d, want 503", code)
	}
}
