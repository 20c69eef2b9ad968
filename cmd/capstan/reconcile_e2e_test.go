package main

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

var webAddrs = []string{"10.231.0.11:80", "10.231.0.12:80"}

// TestE2EApply_LifecycleUnderLoad: apply v1 from nothing with Kamal's
// host layout, a no-op second apply, v2 and an env-only change under load
// with zero failed requests, then a rollback by version.
func TestE2EApply_LifecycleUnderLoad(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply()
	expectServing(t, "v1", t.Fatalf, ", want v1")
	// Kamal's layout on a web host.
	labels := a.sh(0, `docker inspect -f '{{index .Config.Labels "service"}} {{index .Config.Labels "role"}} [{{index .Config.Labels "destination"}}] {{if index .Config.Labels "capstan.fingerprint"}}fp{{end}}' testapp-web-v1`)
	if labels != "testapp web [] fp" {
		t.Errorf("labels %q", labels)
	}
	if got := a.sh(0, `docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' testapp-web-v1 | grep -E '^(KAMAL_|GREETING|SECRET_KEY)' | sort`); got != "GREETING=hello\nKAMAL_CONTAINER_NAME=testapp-web-v1\nKAMAL_HOST=10.231.0.11\nKAMAL_VERSION=v1\nSECRET_KEY=s3cret-value-1" {
		t.Errorf("container env:\n%s", got)
	}
	if got := a.sh(0, `stat -c '%a %s' /root/.kamal/apps/testapp/env/roles/web.env; cat /root/.kamal/apps/testapp/env/roles/web.env`); got != "600 26\nSECRET_KEY=s3cret-value-1" {
		t.Errorf("env file: %q", got)
	}
	if got := a.sh(0, `cat /root/.kamal/testapp-audit.log`); !strings.Contains(got, "[web] Booted app version v1") || !strings.Contains(got, "Tagging 10.231.0.1:5000/testapp:v1 as the latest image") {
		t.Errorf("audit log:\n%s", got)
	}
	if got := a.sh(0, `test -e /root/.kamal/lock-testapp && echo held || echo free`); got != "free" {
		t.Errorf("lock %s after apply", got)
	}
	if got := a.sh(2, `docker ps --format '{{.Names}}' | sort | tr '\n' ' '`); got != "testapp-cache testapp-worker-v1" {
		t.Errorf("worker host runs %q", got)
	}

	// Nothing changed: nothing replaced.
	before, _ := a.containers(0)
	out := a.mustApply()
	after, _ := a.containers(0)
	if before["testapp-web-v1"] == "" || before["testapp-web-v1"] != after["testapp-web-v1"] {
		t.Errorf("no-op apply replaced the container: %v → %v\n%s", before, after, out)
	}
	if plan, _ := a.capstan("plan"); strings.Count(plan, "up to date") != 3 {
		t.Errorf("plan after apply:\n%s", plan)
	}

	// v2 under load.
	a.configure("v2", "", "")
	a.applyUnderLoad("v1→v2")
	expectServing(t, "v2", t.Errorf, " after v2")
	if _, all := a.containers(0); all["testapp-web-v1"] != "exited" || all["testapp-web-v2"] != "running" {
		t.Errorf("after v2: %v", all)
	}

	// Env-only change: same version, new container, under load.
	a.env["DEMO_SECRET_KEY"] = "s3cret-value-2"
	before, _ = a.containers(0)
	out = a.applyUnderLoad("env change")
	after, all := a.containers(0)
	if after["testapp-web-v2"] == "" || after["testapp-web-v2"] == before["testapp-web-v2"] {
		t.Errorf("env change did not reboot web: %v → %v\n%s", before, after, out)
	}
	replaced := false
	for name, st := range all {
		replaced = replaced || (strings.HasPrefix(name, "testapp-web-v2_replaced_") && st == "exited")
	}
	if !replaced {
		t.Errorf("the old v2 container was not renamed _replaced_: %v", all)
	}
	if got := a.sh(0, `cat /root/.kamal/apps/testapp/env/roles/web.env`); got != "SECRET_KEY=s3cret-value-2" {
		t.Errorf("env file after change: %q", got)
	}

	// Roll back by changing the version.
	a.configure("v1", "", "")
	a.mustApply()
	expectServing(t, "v1", t.Errorf, " after rollback")
}

// TestE2EApply_UnhealthyReleaseKeepsOldServing: a version whose /up fails
// leaves v1 serving and the new container stopped, with its logs reported.
func TestE2EApply_UnhealthyReleaseKeepsOldServing(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply()
	a.configure("bad", "", "")
	ld := startLoad(webAddrs)
	out, err := a.capstan("apply")
	ld.finish(t, "unhealthy release")
	if err == nil {
		t.Fatalf("apply of a failing release succeeded:\n%s", out)
	}
	if !strings.Contains(out, "unhealthy") || !strings.Contains(out, "testapp bad listening") && !strings.Contains(out, "listening on :3000") {
		t.Errorf("output lacks the health failure or the container's logs:\n%s", out)
	}
	for i, addr := range webAddrs {
		if got := get(t, addr); !strings.HasPrefix(got, "v1 ") {
			t.Errorf("%s answers %q; v1 must keep serving", addr, got)
		}
		if _, all := a.containers(i); all["testapp-web-bad"] == "running" || all["testapp-web-v1"] != "running" {
			t.Errorf("host %d: %v", i, all)
		}
	}
	// The worker was never booted with the bad version (barrier).
	if _, all := a.containers(2); all["testapp-worker-bad"] != "" {
		t.Errorf("worker booted despite the failed web role: %v", all)
	}
}

// TestE2EApply_RollingFailureSwitchesBack: with boot.limit 1, the second
// group fails its health check; the first group goes back to v1.
func TestE2EApply_RollingFailureSwitchesBack(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply()
	broken := func(version string) {
		a.configure(version, "boot:\n  limit: 1\n", "")
		a.editConfig("hosts: [10.231.0.11, 10.231.0.12]", "hosts:\n      - 10.231.0.11\n      - 10.231.0.12: [broken]",
			"  secret: [SECRET_KEY]\n", "  secret: [SECRET_KEY]\n  tags:\n    broken:\n      APP_FAIL_UP: \"1\"\n")
	}
	broken("v2")
	out, err := a.capstan("apply")
	if err == nil {
		t.Fatalf("apply succeeded:\n%s", out)
	}
	if !strings.Contains(out, "switched back") {
		t.Errorf("output does not say the first group was switched back:\n%s", out)
	}
	expectServing(t, "v1", t.Errorf, "; the fleet must not stay mixed")
	// The switched-back host keeps v2 stopped for inspection; v1 runs.
	if running, _ := a.containers(0); running["testapp-web-v1"] == "" || running["testapp-web-v2"] != "" {
		t.Errorf("host 1 runs %v", running)
	}
}

// TestE2EApply_AdoptsKamalDeployedHosts: containers started with Kamal's
// exact docker run lines (no capstan label), its env files and proxy
// routes are adopted: the first apply replaces nothing, later ones work.
func TestE2EApply_AdoptsKamalDeployedHosts(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply() // network, proxy, accessory, env files
	t.Setenv("DEMO_SECRET_KEY", a.env["DEMO_SECRET_KEY"])
	t.Setenv("LAB_REGISTRY_PASSWORD", a.env["LAB_REGISTRY_PASSWORD"])
	key, err := stateKey(&env{getenv: os.Getenv}, a.env["CAPSTAN_STATE_DIR"])
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kamal.Load(os.DirFS(a.dir), kamal.LoadOptions{FingerprintKey: key, LookupEnv: os.LookupEnv})
	if err != nil {
		t.Fatal(err)
	}
	plans, _ := cfg.Plans()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, log: discardLogger(), getenv: os.Getenv, knownHosts: a.l.KnownHosts, identity: a.l.Identity}
	pool, red, err := newPool(e, cfg, poolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	app, err := newApp(e, cfg, pool, red)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, hp := range plans {
		for _, c := range hp.Apps {
			// Kamal's line: the same argv without capstan's label.
			var argv []string
			for j := 0; j < len(c.Run.Argv); j++ {
				if c.Run.Argv[j] == "--label" && strings.HasPrefix(c.Run.Argv[j+1], kamal.FingerprintLabel+"=") {
					j++
					continue
				}
				argv = append(argv, c.Run.Argv[j])
			}
			a.sh(i, "docker rm -f "+c.Name+" >/dev/null")
			run := append([]string{"sh", "-c", `cd /root && exec "$@"`, "sh"}, kamal.ExpandHome(argv, "/root")...)
			if out, err := a.l.Exec(ctx, i, run...); err != nil {
				t.Fatalf("kamal docker run on %s: %v %s", hp.Host, err, out)
			}
			if rt, ok := app.Route(c.Role); ok {
				ip := a.sh(i, `docker inspect -f '{{(index .NetworkSettings.Networks "kamal").IPAddress}}' `+c.Name)
				id := a.sh(i, `docker inspect -f '{{.Id}}' `+c.Name)[:12]
				if err := app.Proxy.Boot(ctx, hp.Host, []proxy.Route{rt}); err != nil {
					t.Fatal(err)
				}
				if err := app.Proxy.Switch(ctx, hp.Host, rt, proxy.Target{}, proxy.Target{Container: id, IP: netip.MustParseAddr(ip), Port: 3000}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if got := a.sh(0, `docker inspect -f '{{index .Config.Labels "capstan.fingerprint"}}' testapp-web-v1`); got != "" {
		t.Fatalf("the Kamal-style container has a fingerprint %q", got)
	}
	before := [3]map[string]string{}
	for i := range before {
		before[i], _ = a.containers(i)
	}
	plan, _ := a.capstan("plan")
	if strings.Count(plan, "up to date") != 3 {
		t.Errorf("plan on Kamal-deployed hosts is not empty:\n%s", plan)
	}
	a.mustApply()
	for i := range before {
		after, _ := a.containers(i)
		for name, id := range before[i] {
			if after[name] != id {
				t.Errorf("host %d: %s replaced (%s → %s)", i, name, id, after[name])
			}
		}
	}
	// Later applies work.
	a.configure("v2", "", "")
	a.mustApply()
	expectServing(t, "v2", t.Errorf, " after v2")
}

// TestE2EDrift_DetectAndHeal: a stopped container, a removed one and one
// started by hand with the service label are each detected with the right
// kind; apply heals the drifted hosts and touches no other.
func TestE2EDrift_DetectAndHeal(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply()
	a.sh(0, "docker stop testapp-web-v1 >/dev/null")
	a.sh(1, "docker rm -f testapp-web-v1 >/dev/null")
	a.sh(2, "docker run -d --name by-hand --network kamal 10.231.0.1:5000/testapp:v1 >/dev/null")
	worker3, _ := a.containers(2)
	out, err := a.capstan("plan", "--json")
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	for _, want := range []string{`"kind": "stopped"`, `"kind": "container-missing"`, `"kind": "unmanaged-container"`} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks drift %s:\n%s", want, out)
		}
	}
	a.mustApply()
	expectServing(t, "v1", t.Errorf, " after heal")
	after3, _ := a.containers(2)
	if after3["testapp-worker-v1"] != worker3["testapp-worker-v1"] {
		t.Errorf("the worker host was touched: %v → %v", worker3, after3)
	}
	if after3["by-hand"] == "" {
		t.Error("the unmanaged container was stopped although stop_unmanaged is off")
	}
}

// TestE2EApply_SSHCutMidApply: one host's sshd dies mid-apply; the other
// hosts finish; the next apply converges it.
func TestE2EApply_SSHCutMidApply(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply()
	a.configure("v2", "", "")
	done := make(chan struct{})
	var out string
	var err error
	go func() {
		defer close(done)
		out, err = a.capstan("apply")
	}()
	time.Sleep(700 * time.Millisecond)
	if err := a.l.StopSSHD(1); err != nil {
		t.Fatal(err)
	}
	<-done
	if startErr := a.l.StartSSHD(1); startErr != nil {
		t.Fatal(startErr)
	}
	if err == nil {
		t.Logf("apply finished before the cut took effect:\n%s", out)
	} else if !strings.Contains(out, "10.231.0.12") {
		t.Errorf("the failure does not name the cut host:\n%s", out)
	}
	if got := get(t, webAddrs[0]); !strings.HasPrefix(got, "v2 ") {
		t.Errorf("host 1 answers %q; the other hosts must finish", got)
	}
	if running, _ := a.containers(2); running["testapp-worker-v2"] == "" {
		t.Errorf("host 3 runs %v; the other hosts must finish", running)
	}
	a.mustApply()
	expectServing(t, "v2", t.Errorf, " after the next apply")
}

var _ = reconcile.ErrUnhealthy

// TestE2EApply_CrashingReleaseFailsFast: a new container that exits is
// reported as exited (watched while the proxy health-checks it), not as a
// health-check timeout; the old version keeps serving.
func TestE2EApply_CrashingReleaseFailsFast(t *testing.T) {
	a := newE2EApp(t, 3)
	a.mustApply()
	// "crash" exits 2 s after it starts; its /up never passes (APP_FAIL_UP)
	// and the deploy timeout is long, so only the watcher can explain a
	// quick failure.
	a.configure("crash", "", "")
	a.editConfig("deploy_timeout: 10", "deploy_timeout: 60",
		"    GREETING: hello\n", "    GREETING: hello\n    APP_FAIL_UP: \"1\"\n    APP_LOG_ENV: SECRET_KEY\n")
	out, err := a.capstan("apply")
	if err == nil {
		t.Fatalf("apply of a crashing release succeeded:\n%s", out)
	}
	// The app printed its secret; capstan shows its logs, masked.
	if strings.Contains(out, a.env["DEMO_SECRET_KEY"]) || !strings.Contains(out, "SECRET_KEY=[REDACTED]") {
		t.Errorf("the failed container's logs are missing or not masked:\n%s", out)
	}
	crashed := strings.Contains(out, "container exited with code 1") || strings.Contains(out, "container restarting (")
	if !crashed || strings.Contains(out, "within 60s") {
		t.Errorf("the failure is not the container's exit:\n%s", out)
	}
	expectServing(t, "v1", t.Errorf, "; v1 must keep serving")
}

// TestE2EApply_KamalProxyDriver runs the default kamal-proxy driver for
// real against the lab's stand-in binary (internal/lab/kamalproxy, booted
// with Kamal's docker run line and driven with `docker exec kamal-proxy
// kamal-proxy deploy …`): first deploy, a version change under load, and a
// no-op plan that reads the routes back with `kamal-proxy list`.
func TestE2EApply_KamalProxyDriver(t *testing.T) {
	a := newE2EApp(t, 3)
	kamalProxy := func(version string) {
		a.configure(version, "", "")
		a.editConfig("  proxy: haproxy\n  haproxy:\n    image: 10.231.0.1:5000/haproxy:lab\n", "",
			"proxy:\n  app_port: 3000\n", "proxy:\n  app_port: 3000\n  run:\n    registry: 10.231.0.1:5000\n    repository: basecamp/kamal-proxy\n    version: v0.9.2\n")
	}
	kamalProxy("v1")
	a.mustApply()
	expectServing(t, "v1", t.Fatalf, " through kamal-proxy")
	if got := a.sh(0, `docker inspect -f '{{.Config.Image}} {{.HostConfig.RestartPolicy.Name}} {{range .Mounts}}{{.Destination}} {{end}}' kamal-proxy`); !strings.HasPrefix(got, "10.231.0.1:5000/basecamp/kamal-proxy:v0.9.2 unless-stopped") || !strings.Contains(got, "/home/kamal-proxy/.config/kamal-proxy") {
		t.Errorf("kamal-proxy container: %q", got)
	}
	if got := a.sh(0, `docker exec kamal-proxy kamal-proxy list`); !strings.Contains(got, "testapp-web") {
		t.Errorf("kamal-proxy list: %q", got)
	}
	kamalProxy("v2")
	a.applyUnderLoad("v1→v2 through kamal-proxy")
	expectServing(t, "v2", t.Errorf, " after v2")
	if plan, _ := a.capstan("plan"); strings.Count(plan, "up to date") != 3 {
		t.Errorf("plan after the kamal-proxy deploy:\n%s", plan)
	}
}

// expectServing reports, with report (t.Errorf or t.Fatalf), every web host
// that does not answer version; the message is "<addr> answers <got>"
// followed by suffix.
func expectServing(t *testing.T, version string, report func(format string, args ...any), suffix string) {
	t.Helper()
	for _, addr := range webAddrs {
		if got := get(t, addr); !strings.HasPrefix(got, version+" ") {
			report("%s answers %q"+suffix, addr, got)
		}
	}
}
