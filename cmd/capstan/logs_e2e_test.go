package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
)

// logEnv makes the lab app print its secret at start (APP_LOG_ENV), so
// that every log read shows whether capstan masks it.
const logEnv = "    GREETING: hello\n    APP_LOG_ENV: SECRET_KEY\n"

// TestE2ELogs_MergedMaskedAndFollowsARedeploy: `capstan logs` shows the
// current containers of both web hosts and the worker, each line prefixed
// and the secret masked; `details` lists the containers with their
// versions; `logs -f` keeps following the web role through a redeploy and
// shows the new container's lines.
func TestE2ELogs_MergedMaskedAndFollowsARedeploy(t *testing.T) {
	a := newE2EApp(t, 3)
	a.editConfig("    GREETING: hello\n", logEnv)
	a.mustApply()

	out, err := a.capstan("logs")
	if err != nil {
		t.Fatalf("logs: %v\n%s", err, out)
	}
	for _, want := range []string{
		"10.231.0.11 web | testapp: SECRET_KEY=[REDACTED]", "10.231.0.11 web | testapp v1 listening on :3000",
		"10.231.0.12 web | testapp: SECRET_KEY=[REDACTED]", "10.231.0.12 web | testapp v1 listening on :3000",
		"10.231.0.13 worker | testapp: SECRET_KEY=[REDACTED]", "10.231.0.13 worker | testapp v1 listening on :3000",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	if out, _ := a.capstan("logs", "-r", "worker", "--grep", "listening", "-T"); strings.Contains(out, " web |") || strings.Contains(out, "SECRET_KEY") ||
		!strings.Contains(out, "10.231.0.13 worker | 20") || !strings.HasSuffix(out, " testapp v1 listening on :3000\n") {
		t.Errorf("logs -r worker --grep listening -T:\n%s", out)
	}
	checkDetails(t, a, "v1")

	// Follow the web role on one host through a redeploy to v2.
	var buf syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--log-level", "warn", "logs", "-f", "-r", "web", "--hosts", "10.231.0.11", "-n", "10"}, &buf, &buf)
	}()
	waitOutput(t, &buf, "10.231.0.11 web | testapp v1 listening on :3000", 30*time.Second)
	a.configure("v2", "", "")
	a.editConfig("    GREETING: hello\n", logEnv)
	a.mustApply()
	waitOutput(t, &buf, "10.231.0.11 web | capstan: now following testapp-web-v2 (testapp-web-v1 stopped)", 60*time.Second)
	waitOutput(t, &buf, "10.231.0.11 web | testapp v2 listening on :3000", 30*time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logs -f ended with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("logs -f did not end after the cancel")
	}
	got := buf.String()
	t.Logf("capstan logs -f:\n%s", got)
	auditSecrets(t, "the output of capstan logs -f", []byte(got))
	if strings.Count(got, "10.231.0.11 web | testapp: SECRET_KEY=[REDACTED]") != 2 || strings.Contains(got, "10.231.0.12") {
		t.Errorf("logs -f output (want both containers' masked secret lines, only 10.231.0.11):\n%s", got)
	}
	checkDetails(t, a, "v2")
}

// waitOutput waits until buf holds want.
func waitOutput(t *testing.T, buf *syncBuffer, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s in:\n%s", want, within, buf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkDetails checks `capstan details --json`: on each host the current
// container of its role runs version, with an image digest; the web hosts'
// are on the route and have the proxy; the worker host has the accessory.
// The table names the same containers.
func checkDetails(t *testing.T, a *e2eApp, version string) {
	t.Helper()
	out, err := a.capstan("details", "--json")
	if err != nil {
		t.Fatalf("details: %v\n%s", err, out)
	}
	var hosts []reconcile.HostDetails
	if err := json.Unmarshal([]byte(out), &hosts); err != nil {
		t.Fatalf("details --json: %v\n%s", err, out)
	}
	if len(hosts) != 3 {
		t.Fatalf("details of %d hosts:\n%s", len(hosts), out)
	}
	for i, h := range hosts {
		role := map[bool]string{true: "web", false: "worker"}[i < 2]
		kinds := map[string]int{}
		var cur *reconcile.ContainerDetails
		for j, c := range h.Containers {
			kinds[c.Kind]++
			if c.Kind == reconcile.KindApp && c.Current {
				cur = &h.Containers[j]
			}
		}
		switch {
		case h.Error != "":
			t.Errorf("%s: %s", h.Host, h.Error)
		case cur == nil:
			t.Errorf("%s: no current container: %+v", h.Host, h.Containers)
		case cur.Name != "testapp-"+role+"-"+version || cur.Version != version || cur.State != "running" || cur.Uptime == "" ||
			len(cur.Digests) == 0 || !strings.Contains(cur.Digests[0], "@sha256:"):
			t.Errorf("%s: current container %+v, want %s %s running with a digest", h.Host, cur, role, version)
		case role == "web" && (cur.Route != "testapp-web" || kinds[reconcile.KindProxy] != 1):
			t.Errorf("%s: route %q, %d proxies, want testapp-web and one", h.Host, cur.Route, kinds[reconcile.KindProxy])
		case role == "worker" && kinds[reconcile.KindAccessory] != 1:
			t.Errorf("%s: no accessory: %+v", h.Host, h.Containers)
		}
		if kinds[reconcile.KindApp] != 1 {
			t.Errorf("%s: %d app containers listed, want the running one only: %+v", h.Host, kinds[reconcile.KindApp], h.Containers)
		}
	}
	table, err := a.capstan("details")
	for _, role := range []string{"web", "worker"} {
		row := regexp.MustCompile(`(?m)^  testapp-` + role + `-` + version + ` +app +` + role + ` +` + version + ` +running \(current\) `)
		if err != nil || len(row.FindAllString(table, -1)) != map[string]int{"web": 2, "worker": 1}[role] {
			t.Errorf("details table (%v) lacks the %s rows:\n%s", err, role, table)
		}
	}
}

// TestE2EServe_LogsAPI: the daemon answers the logs of the app it deployed
// (both web hosts and the worker, the secret the app prints masked), a
// selection by role and line count, and refuses a request without the
// token.
func TestE2EServe_LogsAPI(t *testing.T) {
	l := startLab(t, 3)
	if err := l.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	bare, w := localRemote(t)
	w.commit(strings.Replace(deployYML(t, "v1"), "    GREETING: hello\n", logEnv, 1), "v1")
	srv := gitHTTP(t, filepath.Dir(bare))
	defer srv.Close()
	d := startServe(t, l, serveOpts{repo: srv.URL + "/app.git"})
	waitServing(t, "v1", 90*time.Second)
	d.waitIdle("succeeded")
	code, body := d.get("/api/v1/apps/testapp/logs", "Bearer "+d.token)
	t.Logf("GET /api/v1/apps/testapp/logs: %d\n%s", code, body)
	auditSecrets(t, "GET /api/v1/apps/testapp/logs", body)
	for _, host := range []string{"10.231.0.11 web", "10.231.0.12 web", "10.231.0.13 worker"} {
		if code != 200 || !strings.Contains(string(body), host+" | testapp: SECRET_KEY=[REDACTED]\n") || !strings.Contains(string(body), host+" | testapp v1 listening on :3000\n") {
			t.Errorf("the logs lack %s's lines", host)
		}
	}
	if code, body := d.get("/api/v1/apps/testapp/logs?role=worker&lines=1", "Bearer "+d.token); code != 200 || string(body) != "10.231.0.13 worker | testapp v1 listening on :3000\n" {
		t.Errorf("role=worker&lines=1: %d %q", code, body)
	}
	if code, body := d.get("/api/v1/apps/testapp/logs", ""); code != 401 || strings.Contains(string(body), "testapp v1") {
		t.Errorf("without the token: %d %q", code, body)
	}
}
