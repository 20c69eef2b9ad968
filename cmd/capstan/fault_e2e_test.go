package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

// Faults production does to a deploy, with traffic running through the
// proxies of the hosts the fault leaves alone.

// TestE2EFault_LockHeldByAPerson: `kamal lock acquire -m "db
// maintenance"` on the lock host. The pass waits lock_timeout, fails naming
// holder and message, alerts once over many polls, changes nothing; when
// the person releases the lock the next poll deploys.
func TestE2EFault_LockHeldByAPerson(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{appExtra: "    lock_timeout: 3s\n"})
	a := &e2eApp{t: t, l: l}
	details := base64.StdEncoding.EncodeToString([]byte("Locked by: Alice <alice@example.com> at 2026-11-29T10:00:00Z\nVersion: v1\nMessage: db maintenance"))
	a.sh(0, "mkdir -p /root/.kamal/lock-testapp && echo "+details+" > /root/.kamal/lock-testapp/details")
	ld := startLoad(webAddrs)
	sha := w.commit(deployYML(t, "v2"), "v2")
	waitFor(t, 30*time.Second, "the pass fails on the held lock", func() bool {
		st := d.status("testapp")
		e, _ := st["last_error"].(string)
		return st["revision"] == sha && st["last_outcome"] == "failed" && strings.Contains(e, "Alice") && strings.Contains(e, "db maintenance")
	})
	time.Sleep(8 * time.Second) // more polls, each waiting for the lock again
	if n := alerts.count("event", "deploy_failed", "revision", sha); n != 1 {
		t.Errorf("%d deploy_failed alerts for the held lock, want 1: %s", n, alerts)
	}
	for _, addr := range webAddrs {
		if got := get(t, addr); !strings.HasPrefix(got, "v1 ") {
			t.Errorf("%s changed while the lock was held: %q", addr, got)
		}
	}
	a.sh(0, "rm -r /root/.kamal/lock-testapp")
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")
	ld.finish(t, "lock held, then released, under load")
	if n := alerts.count("event", "deploy_succeeded", "version", "v2"); n != 1 {
		t.Errorf("%d deploy_succeeded alerts for v2, want 1", n)
	}
	if out := a.sh(0, "test -e /root/.kamal/lock-testapp && echo held || echo free"); out != "free" {
		t.Errorf("capstan left the lock %s", out)
	}
}

// TestE2EFault_BadRelease: a release whose health check never passes fails
// once, is alerted once and not retried for its revision; the old version
// serves throughout; the next commit deploys.
func TestE2EFault_BadRelease(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{})
	ld := startLoad(webAddrs)
	sha := w.commit(deployYML(t, "bad"), "a release that never gets healthy")
	badReleaseOnce(t, l, d, alerts, sha)
	w.commit(deployYML(t, "v2"), "fix")
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")
	ld.finish(t, "bad release, then a good one, under load")
}

// TestE2EFault_CrashAfterSwitch: a release that passes its health check,
// takes the traffic, then crashes 2 s later. The old containers keep
// running through x-capstan.bake (5 s by default), so the crash gives the
// traffic back to them: the pass fails once, alerted once, not retried for
// its revision, every host serves the old version again; the next commit
// deploys. Only requests sent between the crash and the switch back fail
// (HAProxy answers some of them 503 after its 1 s connect turn-around).
func TestE2EFault_CrashAfterSwitch(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{})
	ld := startLoad(webAddrs)
	sha := w.commit(deployYML(t, "crash"), "a release that crashes 2 s after it starts")
	badReleaseOnce(t, l, d, alerts, sha)
	if !strings.Contains(d.logs.String(), "after it took the traffic") {
		t.Errorf("the failure does not say the container crashed after the switch")
	}
	w.commit(deployYML(t, "v2"), "fix")
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")
	ld.finishWithin(t, "a release crashing after the switch, then a good one", 1500*time.Millisecond)
}

// badReleaseOnce waits for the pass of revision sha to fail as a bad
// release and checks it stays failed: not retried over three polls, one
// deploy_failed alert, every host back to one running container of v1.
func badReleaseOnce(t *testing.T, l *lab.Lab, d *serveProc, alerts *alertSink, sha string) {
	t.Helper()
	waitFor(t, 60*time.Second, "the bad release fails", func() bool {
		st := d.status("testapp")
		return st["revision"] == sha && st["last_outcome"] == "failed" && st["running"] == false
	})
	waitServing(t, "v1", 10*time.Second)
	applying := strings.Count(d.logs.String(), `"msg":"applying"`)
	time.Sleep(6 * time.Second) // three polls
	if n := strings.Count(d.logs.String(), `"msg":"applying"`); n != applying {
		t.Errorf("the failed release was retried for the same revision (%d → %d passes applying)", applying, n)
	}
	if n := alerts.count("event", "deploy_failed", "revision", sha); n != 1 {
		t.Errorf("%d deploy_failed alerts, want 1: %s", n, alerts)
	}
	for i := range l.Hosts {
		if running, _ := (&e2eApp{t: t, l: l}).containers(i); len(running) != 1 || !strings.Contains(fmt.Sprint(running), "v1") {
			t.Errorf("host %d after the bad release runs %v", i, running)
		}
	}
}

// TestE2EFault_ProxyRemoved: with self_heal on, the proxy container
// removed by hand is drift, healed by the next sweep; the other web host
// serves throughout.
func TestE2EFault_ProxyRemoved(t *testing.T) {
	l, _, d, alerts := truthLab(t, serveOpts{selfHeal: true, drift: "@every 2s"})
	a := &e2eApp{t: t, l: l}
	ld := startLoad(webAddrs[1:])
	a.sh(0, "docker rm -f capstan-haproxy >/dev/null")
	waitFor(t, 30*time.Second, "proxy-down drift opened", func() bool {
		return alerts.count("event", "drift_opened", "host", "10.231.0.11", "kind", "proxy-down") == 1
	})
	waitFor(t, 30*time.Second, "the sweep heals the proxy", func() bool {
		return strings.HasPrefix(getQuiet(webAddrs[0]), "v1 ")
	})
	waitFor(t, 20*time.Second, "proxy-down drift resolved", func() bool {
		return alerts.count("event", "drift_resolved", "host", "10.231.0.11", "kind", "proxy-down") == 1
	})
	waitFor(t, 30*time.Second, "every drift episode closed", func() bool { return len(openDrift(d)) == 0 })
	for i := range l.Hosts {
		if running, _ := a.containers(i); len(running) != 1 {
			t.Errorf("host %d runs %v after the heal", i, running)
		}
	}
	ld.finish(t, "proxy removed on the other web host")
}

// TestE2EFault_HostRebooted: dockerd stopped and started on a web host
// (a reboot: its containers come back with their restart policies,
// possibly at other addresses on the kamal network). capstan reports the
// host unreachable while dockerd is down, then heals what the restart got
// wrong: a proxy that still routes to the app's old address is switched
// to the new one. The other web host serves throughout.
func TestE2EFault_HostRebooted(t *testing.T) {
	l, _, d, alerts := truthLab(t, serveOpts{selfHeal: true, drift: "@every 2s"})
	a := &e2eApp{t: t, l: l}
	ld := startLoad(webAddrs[1:])
	// The proxy re-created after the app makes a new address more likely.
	a.sh(0, "docker rm -f capstan-haproxy >/dev/null")
	waitFor(t, 30*time.Second, "the sweep heals the proxy", func() bool {
		return strings.HasPrefix(getQuiet(webAddrs[0]), "v1 ")
	})
	before := a.sh(0, appAddressScript)
	if err := l.StopDocker(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the host without dockerd is reported unreachable", func() bool {
		return alerts.count("event", "drift_opened", "host", "10.231.0.11", "kind", "unreachable") == 1
	})
	if err := l.StartDocker(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("app address before the reboot %s, after %s", strings.TrimSpace(before), strings.TrimSpace(a.sh(0, appAddressScript)))
	waitFor(t, 60*time.Second, "the restarted host serves again", func() bool {
		return strings.HasPrefix(getQuiet(webAddrs[0]), "v1 ")
	})
	waitFor(t, 30*time.Second, "every drift episode closed", func() bool { return len(openDrift(d)) == 0 })
	if n := alerts.count("event", "drift_opened", "kind", "unreachable"); n != 1 {
		t.Errorf("%d unreachable episodes, want 1: %s", n, alerts)
	}

	// A restart may hand the app another address (it did once in CI).
	// Make that happen for sure: the app leaves the network, another
	// container takes its address, the app comes back at a new one.
	// HAProxy routes by address, so it now sends the traffic to the
	// squatter until capstan sees the move and switches the route.
	t.Cleanup(func() { _, _ = l.Exec(context.Background(), 0, "docker", "rm", "-f", "squatter") })
	moved := alerts.count("event", "drift_resolved", "host", "10.231.0.11", "kind", "route-wrong") // the restart may have moved it already
	a.sh(0, moveAppAddressScript)
	t.Logf("app address after the move %s", strings.TrimSpace(a.sh(0, appAddressScript)))
	waitFor(t, 30*time.Second, "the route follows the app to its new address", func() bool {
		return strings.HasPrefix(getQuiet(webAddrs[0]), "v1 ")
	})
	waitFor(t, 30*time.Second, "the wrong-route episode closed", func() bool {
		return alerts.count("event", "drift_resolved", "host", "10.231.0.11", "kind", "route-wrong") >= moved+1
	})
	a.sh(0, "docker rm -f squatter >/dev/null")
	for i := range l.Hosts {
		if running, _ := a.containers(i); len(running) != 1 {
			t.Errorf("host %d runs %v after the reboot", i, running)
		}
	}
	ld.finish(t, "the other web host rebooted")
}

// moveAppAddressScript moves the web app to another address on the kamal
// network: it leaves, a squatter takes the freed address, the app comes
// back. The daemon's drift sweep may reconnect the app first (it heals a
// detached container): then the app kept its address, and the move is
// tried again.
const moveAppAddressScript = `set -e
app=$(docker ps --filter label=role=web --format '{{.Names}}')
img=$(docker inspect --format '{{.Config.Image}}' "$app")
addr() { docker inspect --format '{{with index .NetworkSettings.Networks "kamal"}}{{.IPAddress}}{{end}}' "$app"; }
old=$(addr)
for try in 1 2 3 4 5; do
  docker network disconnect kamal "$app" 2>/dev/null || true
  docker rm -f squatter >/dev/null 2>&1 || true
  docker run -d --name squatter --network kamal -e APP_VERSION=squatter "$img" >/dev/null
  docker network connect kamal "$app" 2>/dev/null || true
  new=$(addr)
  if [ -n "$new" ] && [ "$new" != "$old" ]; then exit 0; fi
done
echo "the app kept its address $old" >&2
exit 1`

// appAddressScript prints the web container's address on the kamal network.
const appAddressScript = `docker ps --filter label=role=web --format '{{.Names}}' | xargs -r docker inspect --format '{{.Name}} {{with index .NetworkSettings.Networks "kamal"}}{{.IPAddress}}{{end}}'`

// TestE2EFault_NetworkRemoved: the kamal network removed by hand on a web
// host (every container force-disconnected, then `docker network rm`):
// the app and the proxy run but the host serves nothing. With self-heal
// on, capstan sees both off the network, makes it again, reconnects them
// and switches the route to the app's new address. The other web host
// serves throughout.
func TestE2EFault_NetworkRemoved(t *testing.T) {
	l, _, d, alerts := truthLab(t, serveOpts{selfHeal: true, drift: "@every 2s"})
	a := &e2eApp{t: t, l: l}
	ld := startLoad(webAddrs[1:])
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("alerts: %s", alerts)
		}
	})
	a.sh(0, `set -e
for c in $(docker network inspect kamal --format '{{range .Containers}}{{.Name}} {{end}}'); do
  docker network disconnect -f kamal "$c"
done
docker network rm kamal >/dev/null`)
	// One episode for the proxy, one for the app.
	waitFor(t, 30*time.Second, "network-detached drift opened", func() bool {
		return alerts.count("event", "drift_opened", "host", "10.231.0.11", "kind", "network-detached") == 2
	})
	waitFor(t, 30*time.Second, "the host serves again", func() bool {
		return strings.HasPrefix(getQuiet(webAddrs[0]), "v1 ")
	})
	waitFor(t, 30*time.Second, "every drift episode closed", func() bool { return len(openDrift(d)) == 0 })
	if n := alerts.count("event", "drift_resolved", "host", "10.231.0.11", "kind", "network-detached"); n != 2 {
		t.Errorf("%d network-detached episodes resolved, want 2: %s", n, alerts)
	}
	for i := range l.Hosts {
		if running, _ := a.containers(i); len(running) != 1 {
			t.Errorf("host %d runs %v after the heal", i, running)
		}
	}
	ld.finish(t, "the kamal network removed on the other web host")
}

// TestE2EFault_DockerdDownDuringRollout: dockerd stopped on one web host
// as v2 is pushed; the others take v2, the pass is partial; when dockerd
// returns the host converges.
func TestE2EFault_DockerdDownDuringRollout(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{})
	ld := startLoad(webAddrs[:1])
	if err := l.StopDocker(1); err != nil {
		t.Fatal(err)
	}
	w.commit(deployYML(t, "v2"), "v2")
	waitFor(t, 30*time.Second, "the healthy web host serves v2", func() bool { return strings.HasPrefix(getQuiet(webAddrs[0]), "v2 ") })
	d.waitIdle("partial")
	if err := l.StartDocker(1); err != nil {
		t.Fatal(err)
	}
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")
	ld.finish(t, "dockerd down on the other web host during the rollout")
	if n := alerts.count("event", "deploy_succeeded", "version", "v2"); n != 1 {
		t.Errorf("%d deploy_succeeded alerts for v2, want 1 (when the last host converged)", n)
	}
	for i := range l.Hosts {
		if running, _ := (&e2eApp{t: t, l: l}).containers(i); len(running) != 1 {
			t.Errorf("host %d runs %v", i, running)
		}
	}
}

// getQuiet fetches / through a web host's proxy; "" when it does not answer
// 200 (for polling while a fault is on).
func getQuiet(addr string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// TestE2EFault_ApplyWhileTheDaemonDeploys: an operator runs `capstan
// apply` (same state directory, so the same spec key) at the moment the
// daemon deploys the same commit. One waits on Kamal's lock, naming its
// holder, then observes again and finds the hosts converged: nothing is
// deployed twice (no "_replaced_" container anywhere).
func TestE2EFault_ApplyWhileTheDaemonDeploys(t *testing.T) {
	l, w, d, _ := truthLab(t, serveOpts{poll: "1h"})
	op := &e2eApp{t: t, l: l, dir: w.dir, env: map[string]string{
		"CAPSTAN_KNOWN_HOSTS":         l.KnownHosts,
		"CAPSTAN_IDENTITY":            l.Identity,
		"CAPSTAN_STATE_DIR":           filepath.Join(filepath.Dir(d.cfg), "state"),
		"CAPSTAN_INSECURE_REGISTRIES": l.RegistryAddr,
		"LAB_REGISTRY_PASSWORD":       "lab-registry-password",
		"DEMO_SECRET_KEY":             "s3cret-value-1",
	}}
	ld := startLoad(webAddrs)
	w.commit(deployYML(t, "v2"), "v2")
	var out string
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err = op.capstan("--log-level", "info", "apply")
	}()
	d.post("/api/v1/apps/testapp/sync", nil, map[string]string{"Authorization": "Bearer " + d.token})
	<-done
	if err != nil {
		t.Fatalf("capstan apply: %v\n%s", err, out)
	}
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded", "noop")
	ld.finish(t, "capstan apply while the daemon deploys")
	logs := d.logs.String() + out
	if !strings.Contains(logs, `deploy lock held, waiting`) {
		t.Errorf("neither waited for the other's lock:\n%s", out)
	} else if !strings.Contains(logs, "re-planned after waiting for the deploy lock") {
		t.Errorf("the one that waited did not observe the hosts again")
	}
	for i := range l.Hosts {
		running, all := (&e2eApp{t: t, l: l}).containers(i)
		if len(running) != 1 {
			t.Errorf("host %d runs %v", i, running)
		}
		for name := range all {
			if strings.Contains(name, "_replaced_") {
				t.Errorf("host %d: %s: a container was deployed twice", i, name)
			}
		}
	}
}

// TestE2EFault_TwoDaemonsOnTheSameHosts: a second daemon, with its own
// state directory (so its own fingerprint key and instance ID), pointed at
// hosts the first one converged by mistake. It finds them converged
// (fingerprints of another key are compared by what the containers run)
// and deploys nothing. Asked to sync a new commit at the same moment, the
// two meet at Kamal's lock: one waits, naming the holder (its performer
// and instance ID), and re-plans once it has the lock: every container is
// booted once; nothing is deployed twice.
func TestE2EFault_TwoDaemonsOnTheSameHosts(t *testing.T) {
	l, w, a, _ := truthLab(t, serveOpts{poll: "1h"})
	app := &e2eApp{t: t, l: l}
	before := map[int]string{}
	for i := range l.Hosts {
		running, _ := app.containers(i)
		before[i] = fmt.Sprint(running)
	}
	b := startServe(t, l, serveOpts{repo: a.repo, poll: "1h"})
	b.waitIdle("noop", "succeeded")
	if strings.Contains(b.logs.String(), `"msg":"applying"`) {
		t.Errorf("the second daemon deployed onto converged hosts")
	}
	for i := range l.Hosts {
		if running, _ := app.containers(i); fmt.Sprint(running) != before[i] {
			t.Errorf("host %d: the second daemon changed %s into %v", i, before[i], running)
		}
	}

	ld := startLoad(webAddrs)
	w.commit(deployYML(t, "v2"), "v2")
	auth := func(d *serveProc) map[string]string { return map[string]string{"Authorization": "Bearer " + d.token} }
	a.post("/api/v1/apps/testapp/sync", nil, auth(a)) // answered at once (202): the two passes start together
	b.post("/api/v1/apps/testapp/sync", nil, auth(b))
	waitServing(t, "v2", 60*time.Second)
	a.waitIdle("succeeded", "noop")
	b.waitIdle("succeeded", "noop")
	ld.finish(t, "two daemons syncing the same commit")

	logs := a.logs.String() + b.logs.String()
	ids := []string{instanceOf(t, a), instanceOf(t, b)}
	if !strings.Contains(logs, "deploy lock held, waiting") ||
		!(strings.Contains(logs, "(capstan "+ids[0]+")") || strings.Contains(logs, "(capstan "+ids[1]+")")) {
		t.Errorf("neither daemon waited on the other's lock naming it (ids %v)", ids)
	}
	for i := range l.Hosts {
		running, all := app.containers(i)
		if len(running) != 1 {
			t.Errorf("host %d runs %v", i, running)
		}
		for name := range all {
			if strings.Contains(name, "_replaced_") {
				t.Errorf("host %d: %s: a container was deployed twice", i, name)
			}
		}
		if n := strings.Count(app.sh(i, "cat /root/.kamal/testapp-audit.log"), "Booted app version v2"); n != 1 {
			t.Errorf("host %d: %d \"Booted app version v2\" audit lines, want 1", i, n)
		}
	}
}

// instanceOf is a daemon's instance ID (its deploy locks carry it).
func instanceOf(t *testing.T, d *serveProc) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(d.cfg), "state", "instance.id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestE2EFault_ForcePushed: the branch force-pushed back to an older
// commit, then to a history unrelated to it, then (with the daemon
// stopped) to an amended commit. Each time capstan follows the branch
// head, deploys it as a new revision and says history was rewritten: a
// warning, a history_rewritten alert naming both commits, and the note
// kept with the revision.
func TestE2EFault_ForcePushed(t *testing.T) {
	_, w, d, alerts := truthLab(t, serveOpts{poll: "1s"})
	ld := startLoad(webAddrs)
	branch := w.git("rev-parse", "--abbrev-ref", "HEAD")
	v1 := w.git("rev-parse", "HEAD")
	v2 := w.commit(deployYML(t, "v2"), "v2")
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")

	rewritten := func(sha, kind string) {
		t.Helper()
		waitFor(t, 60*time.Second, kind+": the alert", func() bool {
			return alerts.count("event", "history_rewritten", "revision", sha) == 1
		})
		waitFor(t, 30*time.Second, kind+": the daemon follows the branch head", func() bool {
			return d.status("testapp")["revision"] == sha
		})
		if !strings.Contains(d.logs.String(), kind) {
			t.Errorf("%q is not in the log", kind)
		}
	}
	// Back to v1's commit.
	w.git("push", "-q", "--force", "origin", v1+":refs/heads/"+branch)
	rewritten(v1, "force-pushed back from "+v2[:7]+" to an older commit "+v1[:7])
	waitServing(t, "v1", 60*time.Second)

	// An unrelated history (an orphan branch) serving v3.
	w.git("checkout", "-q", "--orphan", "other")
	orphan := w.commit(deployYML(t, "v3"), "unrelated history")
	w.git("push", "-q", "--force", "origin", orphan+":refs/heads/"+branch)
	rewritten(orphan, "an unrelated history")
	waitServing(t, "v3", 60*time.Second)
	d.waitIdle("succeeded")

	// A commit amended while the daemon is down: told after the restart.
	w.git("commit", "-q", "--allow-empty", "-m", "a commit to amend")
	w.git("push", "-q", "origin", "HEAD:"+branch)
	waitFor(t, 30*time.Second, "the daemon sees the commit to amend", func() bool {
		return d.status("testapp")["revision"] == w.git("rev-parse", "HEAD")
	})
	d.waitIdle("succeeded", "noop")
	d.stop()
	w.git("commit", "-q", "--allow-empty", "--amend", "-m", "amended")
	amended := w.git("rev-parse", "HEAD")
	w.git("push", "-q", "--force", "origin", amended+":refs/heads/"+branch)
	d.start()
	rewritten(amended, "diverged")
	d.waitIdle("succeeded", "noop")
	ld.finish(t, "force-pushes")
}
