package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/failpoint"
	"github.com/capstan-dev/capstan/reconcile"
)

// TestE2EKill_AtEachStepOfADeploy: the daemon is SIGKILLed (a failpoint,
// internal/failpoint) at each step of a deploy of a new version, with
// traffic running through both web proxies, and restarted without the
// failpoint. Each time: the restarted daemon reclaims the deploy lock its
// dead run held, converges (one running container per role and host,
// nothing left created-but-never-started, stopped ones within
// retain_containers), the killed pass is "interrupted" in the history and
// alerted as deploy_interrupted, the new version is announced once, the
// audit logs are well-formed and end with the version running, and no
// request fails.
func TestE2EKill_AtEachStepOfADeploy(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{poll: "1s"})
	a := &e2eApp{t: t, l: l}
	base, parent := d.env, t
	points := []struct {
		point string
		// rootExtra holds more root keys of deploy.yml: the prune point
		// lowers retain_containers so that the deploy prunes several.
		rootExtra string
		retain    int
	}{
		{reconcile.FailAfterPull, "", 5},
		{reconcile.FailAfterCreate, "", 5},
		{reconcile.FailAfterStart, "", 5},
		{reconcile.FailAfterSwitch, "", 5},
		{reconcile.FailDuringPrune, "retain_containers: 1\n", 1},
	}
	run := time.Now().UnixNano() % 100000
	for i, p := range points {
		version := fmt.Sprintf("k%d-%d", i+1, run)
		t.Run(strings.TrimPrefix(p.point, "apply/"), func(t *testing.T) {
			d.t, a.t = t, t
			defer func() { d.t, a.t = parent, parent }()
			// The daemon, armed: SIGTERM is a clean stop between points.
			d.stop()
			d.env = append(slices.Clone(base), failpoint.EnvVar+"="+p.point+"=kill")
			d.start()
			ld := startLoad(webAddrs)
			copyTag(t, l.RegistryAddr, "v2", version)
			sha := w.commit(versionYML(t, version, p.rootExtra), version)
			waitKilled(t, d, p.point)
			t.Logf("%s: at the kill: %s", p.point, fleet(a))
			d.env = base
			restarted := time.Now()
			d.start()
			waitFor(t, 90*time.Second, "a pass of the restarted daemon converges", func() bool { return passDone(d, sha) })
			took := time.Since(restarted)
			waitServing(t, version, 10*time.Second)
			ld.finish(t, "SIGKILL at "+p.point+", then a restart")
			t.Logf("%s: restart → a pass converged in %s", p.point, took.Round(time.Millisecond))

			checkContainers(t, a, version, p.retain)
			if out := a.sh(0, "test -e /root/.kamal/lock-testapp && echo held || echo free"); out != "free" {
				t.Errorf("the deploy lock is %s after the restart converged", out)
			}
			if !strings.Contains(d.logs.String(), "reclaiming a deploy lock left by an earlier run of this capstan") {
				t.Errorf("the restarted daemon did not reclaim the lock its killed run held")
			}
			checkInterrupted(t, d, sha)
			waitFor(t, 10*time.Second, "deploy_interrupted, then deploy_succeeded for "+version, func() bool {
				return alerts.count("event", "deploy_interrupted", "revision", sha, "version", version) == 1 &&
					alerts.count("event", "deploy_succeeded", "version", version) == 1
			})
			checkAuditLogs(t, a, version)
		})
		if t.Failed() {
			return
		}
	}
	if n := alerts.count("event", "deploy_failed"); n != 0 {
		t.Errorf("%d deploy_failed alerts: %s", n, alerts)
	}
}

// versionYML is the lab's deploy.yml at version (a tag of v2's image),
// with APP_VERSION set so that the app answers with the version.
func versionYML(t *testing.T, version, rootExtra string) string {
	yml := labDeployYML(t, version, rootExtra, "")
	const greeting = "    GREETING: hello\n"
	if !strings.Contains(yml, greeting) {
		t.Fatalf("deploy.yml lacks %q", greeting)
	}
	return strings.Replace(yml, greeting, greeting+"    APP_VERSION: "+version+"\n", 1)
}

// waitKilled waits for the daemon to die at point and checks it died of
// SIGKILL, having warned that the failpoint was armed.
func waitKilled(t *testing.T, d *serveProc, point string) {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("the daemon did not die at %s:\n%s", point, d.logs.String())
	}
	var ws syscall.WaitStatus
	if st := d.cmd.ProcessState; st != nil {
		ws, _ = st.Sys().(syscall.WaitStatus)
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the daemon ended with %v, want SIGKILL at %s:\n%s", d.cmd.ProcessState, point, d.logs.String())
	}
	if !strings.Contains(d.logs.String(), failpoint.EnvVar+" is set") {
		t.Errorf("the armed daemon did not warn about %s", failpoint.EnvVar)
	}
}

// roles are the lab app's app roles, by host index.
var roles = []string{"web", "web", "worker"}

// fleet describes every host's containers of the service.
func fleet(a *e2eApp) string {
	var b strings.Builder
	for i := range roles {
		_, all := a.containers(i)
		fmt.Fprintf(&b, "host %d %v; ", i, all)
	}
	return b.String()
}

// checkContainers: one running container per host (its role, at version),
// none created and never started, at most retain stopped.
func checkContainers(t *testing.T, a *e2eApp, version string, retain int) {
	t.Helper()
	for i, role := range roles {
		running, all := a.containers(i)
		if len(running) != 1 || running["testapp-"+role+"-"+version] == "" {
			t.Errorf("host %d runs %v, want only testapp-%s-%s", i, running, role, version)
		}
		stopped := 0
		for name, state := range all {
			switch state {
			case "running":
			case "exited":
				stopped++
			default:
				t.Errorf("host %d: %s is %s: left by the killed run", i, name, state)
			}
		}
		if stopped > retain {
			t.Errorf("host %d keeps %d stopped containers, retain_containers is %d: %v", i, stopped, retain, all)
		}
	}
}

// pass is a pass in the history (GET /api/v1/apps/testapp/history).
type pass struct{ Revision, Outcome, Error string }

// history returns the passes of sha that did something (not noop), newest
// first.
func history(d *serveProc, sha string) []pass {
	d.t.Helper()
	_, body := d.get("/api/v1/apps/testapp/history", "Bearer "+d.token)
	var all []pass
	if err := json.Unmarshal(body, &all); err != nil {
		d.t.Fatalf("history: %v: %s", err, body)
	}
	var out []pass
	for _, p := range all {
		if p.Revision == sha && p.Outcome != "noop" {
			out = append(out, p)
		}
	}
	return out
}

// passDone reports whether the newest pass of sha succeeded (the restarted
// daemon's, since the killed one is marked interrupted) and none runs.
func passDone(d *serveProc, sha string) bool {
	h := history(d, sha)
	return len(h) > 0 && h[0].Outcome == "succeeded" && d.status("testapp")["running"] == false
}

// checkInterrupted: the history has the killed pass of sha as interrupted,
// and a later pass of sha that finished.
func checkInterrupted(t *testing.T, d *serveProc, sha string) {
	t.Helper()
	var outcomes []string
	for _, p := range history(d, sha) {
		outcomes = append(outcomes, p.Outcome)
	}
	// Newest first: the restart's pass, then the killed one.
	if len(outcomes) != 2 || outcomes[0] != "succeeded" || outcomes[1] != "interrupted" {
		t.Errorf("history of %s: %v, want the killed pass interrupted, then one that succeeded", sha[:8], outcomes)
	}
}

// auditLine is one line of Kamal's audit log as capstan writes it: time,
// performer, role (for a role's line), message.
var auditLine = regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] \[capstan[^\]]*\](?: \[([a-z]+)\])? ([A-Z].*)$`)

// checkAuditLogs: every line of every host's audit log is whole and
// well-formed, and the last boot recorded per role is of version. (A line
// in flight when capstan was killed may be missing: the log is
// best-effort, as Kamal's is.)
func checkAuditLogs(t *testing.T, a *e2eApp, version string) {
	t.Helper()
	for i, role := range roles {
		out := a.sh(i, "cat /root/.kamal/testapp-audit.log 2>/dev/null || true")
		last := ""
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			m := auditLine.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("host %d: malformed audit line %q", i, line)
				continue
			}
			if v, ok := strings.CutPrefix(m[2], "Booted app version "); ok && m[1] == role {
				last = v
			}
		}
		if last != version {
			t.Errorf("host %d: the last boot of %s in the audit log is %q, want %s:\n%s", i, role, last, version, out)
		}
	}
}
