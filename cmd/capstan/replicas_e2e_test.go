package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
	"github.com/capstan-dev/capstan/internal/pgtest"
	"github.com/capstan-dev/capstan/internal/testport"
	"github.com/capstan-dev/capstan/state"
)

// replicaApp is one app of the replicas test: its own repository, the
// testapp service under a destination of its own (its containers, labels
// and deploy lock are its own), a non-proxied role on the 3 lab hosts.
type replicaApp struct {
	name string
	bare string
	work *gitWork
}

// replicaDeployYML is app's deploy.yml at version: the testapp image as a
// service of its own on the 3 lab hosts, without the proxy, each new
// container judged ready 4 s after it started (a deploy lasts long enough
// to be cut in the middle).
func replicaDeployYML(version string) string {
	return fmt.Sprintf(`service: testapp
image: testapp
servers:
  web:
    hosts: [10.231.0.11, 10.231.0.12, 10.231.0.13]
    proxy: false
registry:
  server: 10.231.0.1:5000
  username: lab
  password: [REGISTRY_PASSWORD]
builder:
  arch: amd64
env:
  clear:
    GREETING: hello
  secret: [SECRET_KEY]
readiness_delay: 4
deploy_timeout: 20
x-capstan:
  version: %s
`, version)
}

// commit pushes app's deploy.yml at version and returns the commit.
func (a *replicaApp) commit(t *testing.T, version string) string {
	t.Helper()
	// With a destination, Kamal reads .kamal/secrets-common and
	// .kamal/secrets.DEST; the destination's file adds to deploy.yml.
	files := map[string]string{
		"config/deploy." + a.name + ".yml": fmt.Sprintf("env:\n  clear:\n    DESTINATION: %s\n", a.name),
		".kamal/secrets-common":            labSecrets(t),
	}
	for name, content := range files {
		p := filepath.Join(a.work.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return a.work.commit(replicaDeployYML(version), a.name+" "+version)
}

// startReplica starts one `capstan serve` replica on the shared store.
func startReplica(t *testing.T, l *lab.Lab, dsn string, apps []*replicaApp) *serveProc {
	t.Helper()
	dir := t.TempDir()
	addr := testport.Addr(t)
	var b strings.Builder
	b.WriteString(serveHead(t, l, dir, addr, l.RegistryAddr))
	b.WriteString("state: {driver: postgres, dsn_env: CAPSTAN_PG_DSN, lease_ttl: 6s}\napps:\n")
	for _, a := range apps {
		fmt.Fprintf(&b, "  - {name: %s, repo: %s, branch: main, destination: %s, poll: 60s, drift_schedule: \"@every 1h\"}\n", a.name, a.bare, a.name)
	}
	d := newServeProc(t, dir, addr, b.String(), "", []string{"CAPSTAN_PG_DSN=" + dsn})
	d.start()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGCONT) // a test that failed while it was stopped
		d.stop()
		d.auditKept()
	})
	return d
}

// replicaID is the ID the replica logged when it joined.
func (d *serveProc) replicaID() string {
	d.t.Helper()
	for _, line := range strings.Split(d.pastLogs+d.logs.String(), "\n") {
		var m struct{ Msg, Replica string }
		if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "replica joining" {
			return m.Replica
		}
	}
	d.t.Fatal("the replica did not log its ID")
	return ""
}

// hostContainers lists "image|state|name" of the containers of the
// testapp service's destination dest on lab host i.
func hostContainers(t *testing.T, l *lab.Lab, i int, dest string) []string {
	t.Helper()
	out, err := l.Exec(context.Background(), i, "docker", "ps", "-a", "--filter", "label=service=testapp", "--filter", "label=destination="+dest, "--format", "{{.Image}} {{.State}} {{.Names}}")
	if err != nil {
		t.Fatalf("docker ps on %s: %v", l.Hosts[i].Name, err)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(out), " ", "|"))
}

// converged reports whether every lab host runs exactly one container of
// service, at version, and holds none created but never started.
func converged(t *testing.T, l *lab.Lab, service, version string) (bool, string) {
	for i := range 3 {
		var running []string
		for _, c := range hostContainers(t, l, i, service) {
			f := strings.Split(c, "|")
			if f[1] == "running" {
				running = append(running, f[0])
			}
			if f[1] == "created" {
				return false, fmt.Sprintf("%s: %s was created and never started", l.Hosts[i].Name, f[2])
			}
		}
		if len(running) != 1 || !strings.HasSuffix(running[0], ":"+version) {
			return false, fmt.Sprintf("%s runs %q", l.Hosts[i].Name, running)
		}
	}
	return true, ""
}

// waitConverged waits until service runs version alone on the 3 hosts and
// returns how long that took.
func waitConverged(t *testing.T, l *lab.Lab, service, version string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, why := converged(t, l, service, version)
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s not converged on %s within %s: %s", service, version, within, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deploysOf counts app's passes of revision that deployed, once none of
// them runs any more.
func deploysOf(t *testing.T, st *state.Store, app, revision string) (deployed int, outcomes []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		passes, err := st.History(context.Background(), app, 100)
		if err != nil {
			t.Fatal(err)
		}
		deployed, outcomes = 0, nil
		for _, p := range passes {
			if p.Revision == revision {
				outcomes = append(outcomes, p.Outcome)
				if p.Outcome == state.OutcomeSucceeded {
					deployed++
				}
			}
		}
		if !slices.Contains(outcomes, state.OutcomeRunning) || time.Now().After(deadline) {
			return deployed, outcomes
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// owners maps each app to the replica holding its lease.
func owners(t *testing.T, st *state.Store) map[string]string {
	t.Helper()
	leases, err := st.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range leases {
		out[l.App] = l.Owner
	}
	return out
}

// TestE2EReplicas_ThreeReplicasFiveApps runs three replicas of capstan
// serve on one PostgreSQL store with five apps on the lab's hosts:
//   - the apps spread over the replicas; each commit, announced by a
//     webhook to a replica that may not hold the app, deploys exactly once;
//   - the replica deploying an app is killed (SIGKILL) in the middle:
//     another takes the app over within 15 s and finishes the deploy, with
//     no container left behind and no second deploy;
//   - a replica paused (SIGSTOP) in the middle of a deploy loses the app;
//     after the next version deployed it wakes (SIGCONT) and touches no
//     host: the hosts keep the newer version;
//   - PostgreSQL restarts: the replicas reconnect and deploy again.
func TestE2EReplicas_ThreeReplicasFiveApps(t *testing.T) {
	l := startLab(t, 3)
	ctx := context.Background()
	if err := l.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	pg := pgtest.StartServer(t)
	dsn := pg.CreateDB(t)
	var apps []*replicaApp
	for i := range 5 {
		a := &replicaApp{name: fmt.Sprintf("rep%d", i+1)}
		a.bare, a.work = localRemote(t)
		apps = append(apps, a)
	}
	shas := map[string]string{}
	for _, a := range apps {
		shas[a.name] = a.commit(t, "v1")
	}
	var reps []*serveProc
	for range 3 {
		reps = append(reps, startReplica(t, l, dsn, apps))
	}
	st, err := state.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	byID := map[string]*serveProc{}
	for _, r := range reps {
		byID[r.replicaID()] = r
	}

	// 1. Every app deploys v1 once, the apps spread over the replicas.
	for _, a := range apps {
		waitConverged(t, l, a.name, "v1", 90*time.Second)
	}
	for _, a := range apps {
		if n, outs := deploysOf(t, st, a.name, shas[a.name]); n != 1 {
			t.Errorf("%s v1: %d deploys (passes %v), want exactly 1", a.name, n, outs)
		}
	}
	spread := map[string]int{}
	for app, owner := range owners(t, st) {
		if byID[owner] == nil {
			t.Errorf("%s held by %q, not one of the replicas", app, owner)
		}
		spread[owner]++
	}
	t.Logf("apps per replica: %v", spread)
	if len(spread) < 2 {
		t.Errorf("the apps did not spread over the replicas: %v", spread)
	}

	// A webhook to a replica that does not hold the app is handed over.
	notOwner := func(app string) *serveProc {
		own := owners(t, st)[app]
		for id, r := range byID {
			if id != own && r.cmd.ProcessState == nil {
				return r
			}
		}
		t.Fatalf("no live replica other than %s", own)
		return nil
	}
	a4 := apps[3]
	sha := a4.commit(t, "v2")
	notOwner(a4.name).pushWebhookFor(a4.bare, sha)
	took := waitConverged(t, l, a4.name, "v2", 60*time.Second)
	t.Logf("%s: webhook to a replica not holding it → v2 on every host in %s", a4.name, took.Round(100*time.Millisecond))
	if n, outs := deploysOf(t, st, a4.name, sha); n != 1 {
		t.Errorf("%s v2: %d deploys (passes %v), want exactly 1", a4.name, n, outs)
	}

	// 2. Kill the replica deploying rep1 in the middle of the deploy.
	a1 := apps[0]
	sha = a1.commit(t, "v2")
	leader := byID[owners(t, st)[a1.name]]
	leader.pushWebhookFor(a1.bare, sha)
	waitMidDeploy(t, l, a1.name, "v2")
	leader.kill9()
	killed := time.Now()
	var takeover time.Duration
	for {
		if own := owners(t, st)[a1.name]; own != "" && byID[own] != leader {
			takeover = time.Since(killed)
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("no replica took %s over within 15 s of the kill", a1.name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitConverged(t, l, a1.name, "v2", 60*time.Second)
	t.Logf("%s: leader killed mid-deploy; taken over after %s, v2 everywhere %s after the kill", a1.name, takeover.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	if n, outs := deploysOf(t, st, a1.name, sha); n != 1 || !slices.Contains(outs, state.OutcomeAbandoned) {
		t.Errorf("%s v2: %d deploys, passes %v; want 1 deploy and the killed one interrupted", a1.name, n, outs)
	}

	// 3. Pause the replica deploying rep2 in the middle; another takes
	// over and deploys v2, then v3; the paused one wakes and must not act.
	a2 := apps[1]
	sha = a2.commit(t, "v2")
	paused := byID[owners(t, st)[a2.name]]
	if paused.cmd.ProcessState != nil {
		t.Fatal("rep2's owner is the killed replica")
	}
	paused.pushWebhookFor(a2.bare, sha)
	waitMidDeploy(t, l, a2.name, "v2")
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitConverged(t, l, a2.name, "v2", 60*time.Second)
	successor := byID[owners(t, st)[a2.name]]
	if successor == paused {
		t.Fatal("the paused replica still holds rep2")
	}
	sha3 := a2.commit(t, "v3")
	successor.pushWebhookFor(a2.bare, sha3)
	waitConverged(t, l, a2.name, "v3", 60*time.Second)
	t.Logf("%s: owner paused mid-deploy; v2 then v3 deployed by another replica %s after the pause", a2.name, time.Since(stopped).Round(100*time.Millisecond))
	logged := make([]int64, 3) // what the hosts' sshd logged so far
	for i := range logged {
		if fi, err := os.Stat(l.CommandLog(i)); err == nil {
			logged[i] = fi.Size()
		}
	}
	woke := time.Now()
	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second) // its stalled pass had seconds of work left
	if ok, why := converged(t, l, a2.name, "v3"); !ok {
		t.Errorf("after the paused replica woke, %s is no longer v3 alone: %s", a2.name, why)
	}
	for i := range logged {
		b, _ := os.ReadFile(l.CommandLog(i))
		for _, line := range strings.Split(string(b[min(int(logged[i]), len(b)):]), "\n") {
			if strings.Contains(line, a2.name) {
				t.Errorf("after the paused replica woke, %s ran: %s", l.Hosts[i].Name, line)
			}
		}
	}
	if _, ok := paused.logTimeAfter(woke, `"msg":"app given up"`, `"app":"`+a2.name+`"`); !ok {
		t.Errorf("the woken replica did not log giving %s up", a2.name)
	}
	if at, ok := paused.logTimeAfter(woke, "lease lost"); ok {
		t.Logf("the woken replica's stalled work was refused by the fence at %s", at.Format("15:04:05.000"))
	}

	// 4. PostgreSQL stops for 3 s: the replicas reconnect and go on.
	pg.Stop()
	time.Sleep(3 * time.Second)
	pg.Start(t)
	a3 := apps[2]
	sha = a3.commit(t, "v2")
	var via *serveProc
	for _, r := range reps {
		if r != leader {
			via = r
			break
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		via.pushWebhookFor(a3.bare, sha)
		if ok, _ := converged(t, l, a3.name, "v2"); ok {
			break
		}
		time.Sleep(2 * time.Second)
	}
	waitConverged(t, l, a3.name, "v2", 5*time.Second)
	if n, outs := deploysOf(t, st, a3.name, sha); n != 1 {
		t.Errorf("%s v2 after the database restart: %d deploys (passes %v), want exactly 1", a3.name, n, outs)
	}
}

// waitMidDeploy waits until a container of service at version exists on
// some host while another host has none yet running: the deploy is under
// way.
func waitMidDeploy(t *testing.T, l *lab.Lab, service, version string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i := range 3 {
			for _, c := range hostContainers(t, l, i, service) {
				if strings.HasPrefix(c, l.RegistryAddr+"/testapp:"+version+"|") {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s container of %s appeared", version, service)
}
