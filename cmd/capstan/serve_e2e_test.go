package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EServe_DeployOnMergeRevertAndWebhooks: a commit deploys, a webhook
// with a bad signature is refused, a good one starts a pass at once, an
// invalid config is recorded failed without touching hosts, and a revert
// rolls back.
func TestE2EServe_DeployOnMergeRevertAndWebhooks(t *testing.T) {
	l := startLab(t, 3)
	if err := l.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	bare, w := localRemote(t)
	recv := newAlertSink(t)
	w.commit(deployYML(t, "v1"), "v1")
	// capstan fetches over smart HTTP (git http-backend); the test pushes
	// to the bare repository directly.
	srv := gitHTTP(t, filepath.Dir(bare))
	defer srv.Close()
	d := startServe(t, l, serveOpts{repo: srv.URL + "/app.git", alertURL: recv.URL, drift: "@every 2s", selfHeal: false})
	t.Logf("first deploy (startup pass): all hosts serve v1 after %s", waitServing(t, "v1", 90*time.Second))
	d.waitIdle("succeeded") // the startup pass ends after its bake: the webhook's pass then starts at once

	// Webhooks: a wrong signature changes nothing.
	sha2 := w.commit(deployYML(t, "v2"), "v2")
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":%q,"repository":{"clone_url":%q}}`, sha2, srv.URL+"/app.git"))
	if code := d.post("/webhooks/github", body, map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)}); code != 401 {
		t.Errorf("bad signature: %d, want 401", code)
	}
	time.Sleep(2 * time.Second)
	if got := get(t, webAddrs[0]); !strings.HasPrefix(got, "v1 ") {
		t.Fatalf("a refused webhook changed the fleet: %q", got)
	}
	mac := hmac.New(sha256.New, []byte("gh-secret"))
	mac.Write(body)
	sent := time.Now()
	if code := d.post("/webhooks/github", body, map[string]string{"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))}); code != 200 {
		t.Fatalf("good signature: %d", code)
	}
	waitServing(t, "v2", 60*time.Second)
	t.Logf("webhook → all hosts serve v2 in %s", time.Since(sent).Round(time.Millisecond))
	d.waitIdle("succeeded")
	if dom, ok := browserDOM(t, d.pageURL()); ok {
		for _, want := range []string{`id="app-testapp"`, `<b class="version">v2</b>`, `class="pass"`, "webhook", "succeeded"} {
			if !strings.Contains(dom, want) {
				t.Errorf("status page in the browser after the v2 deploy lacks %s", want)
			}
		}
	}
	started, ok := d.logTime(`"msg":"pass started"`, `"trigger":"webhook"`)
	switch lag := started.Sub(sent); {
	case !ok:
		t.Error("no pass started by the webhook")
	case lag > time.Second:
		t.Errorf("the pass started %s after the webhook; want within 1s", lag)
	default:
		t.Logf("webhook → pass started in %s", lag.Round(time.Millisecond))
	}
	if at, ok := d.logTimeAfter(started, `"msg":"ssh command"`); ok {
		t.Logf("webhook → first SSH command of its pass (after fetch and config load) in %s", at.Sub(sent).Round(time.Millisecond))
	}
	t.Logf("RSS of capstan serve, idle: %d KiB", d.rssKiB())
	if !strings.Contains(d.logs.String(), `"trigger":"webhook"`) {
		t.Errorf("the pass was not started by the webhook")
	}

	// An invalid config: recorded failed, hosts untouched.
	before, _ := (&e2eApp{t: t, l: l}).containers(0)
	w.commit("service: testapp\nimage: [broken\n", "broken config")
	if code := d.post("/api/v1/apps/testapp/sync", nil, map[string]string{"Authorization": "Bearer " + d.token}); code != 202 {
		t.Fatalf("sync: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.status("testapp")["last_outcome"] != "invalid" {
		if time.Now().After(deadline) {
			t.Fatalf("invalid config not recorded: %v", d.status("testapp"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	after, _ := (&e2eApp{t: t, l: l}).containers(0)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("an invalid config touched the hosts: %v → %v", before, after)
	}
	if code := d.post("/api/v1/apps/testapp/sync", nil, nil); code != 401 {
		t.Errorf("sync without token: %d, want 401", code)
	}

	// The next good commit deploys; a revert of the one after rolls back.
	sync := func() {
		d.post("/api/v1/apps/testapp/sync", nil, map[string]string{"Authorization": "Bearer " + d.token})
	}
	w.commit(deployYML(t, "v3"), "v3")
	committed := time.Now()
	sync()
	peak := d.peakRSSWhile(func() { waitServing(t, "v3", 60*time.Second) })
	t.Logf("commit (sync call) → all hosts serve v3 in %s; peak RSS during the deploy: %d KiB", time.Since(committed).Round(time.Millisecond), peak)
	d.waitIdle("succeeded")
	w.commit(deployYML(t, "v2"), "back to v2")
	sync()
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")
	w.git("revert", "--no-edit", "HEAD")
	w.git("push", "-q", "origin", "HEAD:main")
	sync()
	waitServing(t, "v3", 60*time.Second)
	d.waitIdle("succeeded")
	w.git("revert", "--no-edit", "HEAD")
	w.git("push", "-q", "origin", "HEAD:main")
	sync()
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")

	// Drift: stop a container; the sweep opens one episode, reports it
	// once, and (self_heal off) leaves it.
	(&e2eApp{t: t, l: l}).sh(0, "docker stop testapp-web-v2 >/dev/null")
	count := func(event string) int { return recv.count("event", event, "host", "10.231.0.11") }
	waitEvent := func(event string) {
		t.Helper()
		waitFor(t, 20*time.Second, event+" alert", func() bool { return count(event) > 0 })
	}
	waitEvent("drift_opened")
	time.Sleep(5 * time.Second) // two more sweeps
	if n := count("drift_opened"); n != 1 {
		t.Errorf("%d drift_opened alerts for one episode", n)
	}
	if running, _ := (&e2eApp{t: t, l: l}).containers(0); running["testapp-web-v2"] != "" {
		t.Error("self_heal is off but the container was restarted")
	}
	if dom, ok := browserDOM(t, d.pageURL()); ok {
		for _, want := range []string{`class="drift-episode"`, "10.231.0.11", "stopped", "testapp-web-v2 is exited"} {
			if !strings.Contains(dom, want) {
				t.Errorf("status page in the browser during the drift lacks %s", want)
			}
		}
	}
	(&e2eApp{t: t, l: l}).sh(0, "docker start testapp-web-v2 >/dev/null")
	waitEvent("drift_resolved")
	time.Sleep(3 * time.Second)
	if n := count("drift_resolved"); n != 1 {
		t.Errorf("%d drift_resolved alerts for one episode", n)
	}
	// The status page shows the app, its version and recent passes; it,
	// the API and the metrics need the token, health checks do not.
	for _, path := range []string{"/", "/api/v1/apps", "/metrics"} {
		if code, _ := d.get(path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, code)
		}
	}
	if code, _ := d.get("/healthz", ""); code != http.StatusOK {
		t.Errorf("GET /healthz: %d", code)
	}
	code, page := d.get("/", "Bearer "+d.token)
	if code != http.StatusOK {
		t.Errorf("GET / with the token: %d", code)
	}
	for _, want := range []string{"testapp", "v2", "succeeded", "invalid"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("status page lacks %q", want)
		}
	}
	code, m := d.get("/metrics", "Bearer "+d.token)
	if code != http.StatusOK {
		t.Errorf("GET /metrics with the token: %d", code)
	}
	for _, want := range []string{"capstan_deploys_total", "capstan_ssh_commands_total", "capstan_last_successful_sync_timestamp_seconds"} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestE2EServe_SSHRepoLateImageKillAndUnreachableApp: the repository is
// served over SSH by a lab host; the image of a commit appears in the
// registry only later (capstan waits); capstan is killed with SIGKILL
// mid-deploy and restarted (the fleet converges, nothing duplicated); a
// second app whose host is unreachable never delays the first.
func TestE2EServe_SSHRepoLateImageKillAndUnreachableApp(t *testing.T) {
	l := startLab(t, 3)
	ctx := context.Background()
	if err := l.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	a := &e2eApp{t: t, l: l}
	repo, w := sshRemote(t, l)
	w.commit(deployYML(t, "v1"), "v1")
	other := `  - name: other
    repo: ` + repo + `
    branch: other
    poll: 1s
    git: {ssh_key: ` + l.Identity + `, known_hosts: ` + l.KnownHosts + `}
`
	// The other app's branch puts its only host out of reach.
	w.git("checkout", "-q", "-b", "other")
	w.commit(strings.ReplaceAll(strings.ReplaceAll(deployYML(t, "v1"), "[10.231.0.11, 10.231.0.12]", "[10.231.0.99]"), "10.231.0.13", "10.231.0.99"), "unreachable")
	w.git("checkout", "-q", "main")
	d := startServe(t, l, serveOpts{repo: repo, sshKey: l.Identity, knownHosts: l.KnownHosts, poll: "1s", extraApps: other})
	t.Logf("SSH repo: all hosts serve v1 %s after start", waitServing(t, "v1", 90*time.Second))

	// A commit whose image is not in the registry yet.
	tag := fmt.Sprintf("late%d", time.Now().UnixNano()%100000)
	w.commit(deployYML(t, tag), "late image")
	time.Sleep(20 * time.Second) // CI pushes the image 20 s after the commit
	if !strings.Contains(d.logs.String(), "waiting for the image in the registry") {
		t.Errorf("capstan did not report waiting for the image")
	}
	if st := d.status("testapp"); st["last_outcome"] != "waiting_image" || st["waiting_image"] == nil {
		t.Errorf("the API does not show the wait for the image: %v", st)
	}
	if got := get(t, webAddrs[0]); !strings.HasPrefix(got, "v1 ") {
		t.Fatalf("hosts changed before the image existed: %q", got)
	}
	copyTag(t, l.RegistryAddr, "v2", tag)
	pushed := time.Now()
	waitServing(t, "v2", 90*time.Second)
	t.Logf("image pushed → all hosts serve it in %s", time.Since(pushed).Round(time.Millisecond))

	// SIGKILL mid-deploy, restart: converges, no duplicates or orphans.
	w.commit(deployYML(t, "v3"), "v3")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.logs.String(), `"msg":"applying","app":"testapp"`) || strings.Count(d.logs.String(), `"msg":"applying","app":"testapp"`) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the v3 pass did not start:\n%s", d.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	d.kill9()
	d.start()
	waitServing(t, "v3", 120*time.Second)
	d.waitIdle("succeeded", "noop") // the restarted daemon's pass has finished
	for i := 0; i < 3; i++ {
		running, _ := a.containers(i)
		if len(running) != 1 {
			t.Errorf("host %d runs %v: duplicates or orphans after SIGKILL", i, running)
		}
	}
	if out := a.sh(0, "test -e /root/.kamal/lock-testapp && cat /root/.kamal/lock-testapp/details | base64 -d || echo free"); out != "free" {
		t.Logf("lock after kill/restart: %s (cleared by the next pass)", out)
	}
	// The other app's only host does not exist: failed, never a success,
	// and the host is an open unreachable episode.
	waitFor(t, 20*time.Second, "the app whose only host is unreachable reports failure", func() bool {
		st := d.status("other")
		return st["last_outcome"] == "failed" && st["last_success"] == "0001-01-01T00:00:00Z" &&
			strings.Contains(fmt.Sprint(st["open_drift"]), "unreachable")
	})
}
