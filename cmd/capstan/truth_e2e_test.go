package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/capstan-dev/capstan/internal/lab"
	"github.com/capstan-dev/capstan/internal/testport"
)

// alertSink receives capstan's webhook alerts.
type alertSink struct {
	*httptest.Server
	mu     sync.Mutex
	events []map[string]any
}

func newAlertSink(t *testing.T) *alertSink {
	s := &alertSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var e map[string]any
		_ = json.NewDecoder(r.Body).Decode(&e)
		s.mu.Lock()
		s.events = append(s.events, e)
		s.mu.Unlock()
	}))
	t.Cleanup(func() {
		s.Close()
		auditSecrets(t, "alert payloads", []byte(s.String()))
	})
	return s
}

// count returns how many alerts match every key=value pair given.
func (s *alertSink) count(kv ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.events {
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			ok = ok && fmt.Sprint(e[kv[i]]) == kv[i+1]
		}
		if ok {
			n++
		}
	}
	return n
}

func (s *alertSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(s.events)
	return string(b)
}

// waitFor polls cond every 100 ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// truthLab starts the daemon on a fresh lab with v1 deployed and serving.
func truthLab(t *testing.T, o serveOpts) (*lab.Lab, *gitWork, *serveProc, *alertSink) {
	t.Helper()
	l := startLab(t, 3)
	if err := l.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Reset(context.Background()) }) // links up, sshd running
	bare, w := localRemote(t)
	w.commit(deployYML(t, "v1"), "v1")
	srv := gitHTTP(t, filepath.Dir(bare))
	t.Cleanup(srv.Close)
	alerts := newAlertSink(t)
	o.repo, o.alertURL = srv.URL+"/app.git", alerts.URL
	if o.poll == "" {
		o.poll = "2s"
	}
	d := startServe(t, l, o)
	waitServing(t, "v1", 90*time.Second)
	d.waitIdle("succeeded")
	return l, w, d, alerts
}

func openDrift(d *serveProc) []any {
	v, _ := d.status("testapp")["open_drift"].([]any)
	return v
}

// TestE2ETruth_SelfHealOffLeavesDriftAlone: with self_heal false, polls
// only observe a converged host: a container stopped by hand stays
// stopped, its drift is alerted once, no deploy is announced; a forced
// sync heals it.
func TestE2ETruth_SelfHealOffLeavesDriftAlone(t *testing.T) {
	l, _, d, alerts := truthLab(t, serveOpts{selfHeal: false})
	a := &e2eApp{t: t, l: l}
	a.sh(0, "docker stop testapp-web-v1 >/dev/null")
	waitFor(t, 20*time.Second, "drift_opened alert", func() bool {
		return alerts.count("event", "drift_opened", "host", "10.231.0.11", "kind", "stopped") == 1
	})
	time.Sleep(12 * time.Second) // ≥ 5 polls of 2 s
	if running, _ := a.containers(0); running["testapp-web-v1"] != "" {
		t.Fatal("self_heal is off, yet a poll restarted the stopped container")
	}
	if n := alerts.count("event", "drift_opened"); n != 1 {
		t.Errorf("%d drift_opened alerts, want 1: %s", n, alerts)
	}
	if n := alerts.count("event", "deploy_succeeded"); n != 1 {
		t.Errorf("%d deploy_succeeded alerts, want 1 (the first deploy only): %s", n, alerts)
	}
	if open := openDrift(d); len(open) != 1 || !strings.Contains(fmt.Sprint(open), "stopped") {
		t.Errorf("open drift %v", open)
	}
	if code := d.post("/api/v1/apps/testapp/sync?force=1", nil, map[string]string{"Authorization": "Bearer " + d.token}); code != 202 {
		t.Fatalf("forced sync: %d", code)
	}
	waitFor(t, 30*time.Second, "the forced sync heals the container", func() bool {
		running, _ := a.containers(0)
		return running["testapp-web-v1"] != ""
	})
	waitFor(t, 20*time.Second, "drift_resolved alert", func() bool { return alerts.count("event", "drift_resolved") == 1 })
	if n := alerts.count("event", "deploy_succeeded"); n != 1 {
		t.Errorf("%d deploy_succeeded alerts after healing drift of the same revision, want 1", n)
	}
}

// TestE2ETruth_HostDownDuringDeploy: sshd stopped on one web host; the
// others take v2 at once, the pass is partial, the host is an unreachable
// drift episode; when sshd returns the host alone takes v2.
func TestE2ETruth_HostDownDuringDeploy(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{})
	a := &e2eApp{t: t, l: l}
	if err := l.StopSSHD(1); err != nil {
		t.Fatal(err)
	}
	success := d.status("testapp")["last_success"]
	w.commit(deployYML(t, "v2"), "v2")
	waitFor(t, 30*time.Second, "host 0 serves v2", func() bool { return strings.HasPrefix(get(t, webAddrs[0]), "v2 ") })
	d.waitIdle("partial")
	st := d.status("testapp")
	if fmt.Sprint(st["unreachable"]) != "[10.231.0.12]" || st["last_success"] != success {
		t.Errorf("status while a host is down: %v", st)
	}
	if !strings.HasPrefix(get(t, webAddrs[1]), "v1 ") {
		t.Errorf("the down host changed")
	}
	waitFor(t, 15*time.Second, "unreachable drift alert", func() bool {
		return alerts.count("event", "drift_opened", "host", "10.231.0.12", "kind", "unreachable") == 1
	})
	if n := alerts.count("event", "deploy_succeeded"); n != 1 {
		t.Errorf("v2 announced as deployed while a host lacks it: %s", alerts)
	}
	cli := exec.Command(capstanBinary(t), "status", "--server", "http://"+d.addr, "--token", d.token)
	out, err := cli.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "partial") || !strings.Contains(string(out), "drift testapp 10.231.0.12 unreachable:") {
		t.Errorf("capstan status while a host is down (%v):\n%s", err, out)
	}
	if dom, ok := browserDOM(t, d.pageURL()); ok {
		for _, want := range []string{"unreachable", "10.231.0.12", `class="warn pending"`, "partial"} {
			if !strings.Contains(dom, want) {
				t.Errorf("status page while a host is down lacks %s", want)
			}
		}
	}
	_, before0 := a.containers(0)
	_, before2 := a.containers(2)
	time.Sleep(5 * time.Second) // more polls while it is down: one episode
	if err := l.StartSSHD(1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the returning host serves v2", func() bool { return strings.HasPrefix(get(t, webAddrs[1]), "v2 ") })
	d.waitIdle("succeeded")
	waitFor(t, 10*time.Second, "drift_resolved", func() bool {
		return alerts.count("event", "drift_resolved", "host", "10.231.0.12", "kind", "unreachable") == 1
	})
	if n := alerts.count("event", "drift_opened", "kind", "unreachable"); n != 1 {
		t.Errorf("%d unreachable episodes opened, want 1: %s", n, alerts)
	}
	if n := alerts.count("event", "deploy_succeeded", "version", "v2"); n != 1 {
		t.Errorf("%d deploy_succeeded for v2, want 1 once the last host converged: %s", n, alerts)
	}
	_, after0 := a.containers(0)
	_, after2 := a.containers(2)
	if fmt.Sprint(before0) != fmt.Sprint(after0) || fmt.Sprint(before2) != fmt.Sprint(after2) {
		t.Errorf("hosts that had converged were touched: %v→%v, %v→%v", before0, after0, before2, after2)
	}
}

// TestE2ETruth_SilentNetworkCut: one web host's link dropped silently
// (no RST) as v2 is pushed; the healthy hosts serve v2 within 15 s of the
// push, the cut host is reported within 15 s, and converges once the link
// returns.
func TestE2ETruth_SilentNetworkCut(t *testing.T) {
	l, w, d, _ := truthLab(t, serveOpts{})
	if err := l.SetLink(1, false); err != nil {
		t.Fatal(err)
	}
	w.commit(deployYML(t, "v2"), "v2")
	pushed := time.Now()
	took := waitFor(t, 15*time.Second, "the healthy web host serves v2", func() bool {
		return strings.HasPrefix(getQuiet(webAddrs[0]), "v2 ")
	})
	t.Logf("push → healthy host serves v2 with one host cut off: %s", took.Round(time.Millisecond))
	waitFor(t, 15*time.Second-time.Since(pushed), "the cut host reported unreachable", func() bool {
		return fmt.Sprint(d.status("testapp")["unreachable"]) == "[10.231.0.12]"
	})
	t.Logf("push → cut host reported unreachable: %s", time.Since(pushed).Round(time.Millisecond))
	if err := l.SetLink(1, true); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 60*time.Second, "the cut host converges when its link returns", func() bool {
		return strings.HasPrefix(get(t, webAddrs[1]), "v2 ")
	})
	t.Logf("link back → host converged: %s", time.Since(back).Round(time.Millisecond))
	d.waitIdle("succeeded", "noop")
}

// TestE2ETruth_PermanentRegistryErrorsFailFast: errors waiting cannot fix
// fail the pass within 5 s, naming the fix, alerted once; hosts untouched.
func TestE2ETruth_PermanentRegistryErrorsFailFast(t *testing.T) {
	plainReg, authReg := extraRegistry(t, false), extraRegistry(t, true)
	_, w, d, alerts := truthLab(t, serveOpts{poll: "1s", insecure: l0Registry + ", " + authReg})
	cases := []struct{ name, server, want string }{
		{"plain HTTP, not in insecure_registries", plainReg, "insecure_registries"},
		{"credentials refused (401)", authReg, "401"},
		{"name does not resolve", "registry.capstan-test.invalid:5000", "does not resolve"},
	}
	for _, c := range cases {
		yml := strings.Replace(deployYML(t, "v2"), "server: "+l0Registry, "server: "+c.server, 1)
		sha := w.commit(yml, c.name)
		took := waitFor(t, 20*time.Second, c.name, func() bool {
			st := d.status("testapp")
			return st["revision"] == sha && st["last_outcome"] == "failed" && strings.Contains(fmt.Sprint(st["last_error"]), c.want)
		})
		// From the push: the poll (1 s), the fetch and the observe come first.
		t.Logf("%s: failed %s after the push: %s", c.name, took.Round(time.Millisecond), d.status("testapp")["last_error"])
		if took > 5*time.Second {
			t.Errorf("%s: failed %s after the push, want within 5 s", c.name, took)
		}
		time.Sleep(3 * time.Second) // more polls: still one alert
		if n := alerts.count("event", "deploy_failed", "revision", sha); n != 1 {
			t.Errorf("%s: %d deploy_failed alerts, want 1", c.name, n)
		}
	}
	if got := get(t, webAddrs[0]); !strings.HasPrefix(got, "v1 ") {
		t.Errorf("a host changed: %q", got)
	}
}

// l0Registry is the lab registry's address (lab.Subnet .1, port 5000).
const l0Registry = "10.231.0.1:5000"

// extraRegistry runs another real distribution registry, on loopback
// (plain HTTP). With auth it requires a password capstan does not have, so
// it answers 401 to every request capstan makes.
func extraRegistry(t *testing.T, auth bool) string {
	t.Helper()
	bin, err := exec.LookPath("registry")
	if err != nil {
		bin = "/var/cache/capstan-lab/bin/registry"
	}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("not-what-capstan-has"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "htpasswd"), []byte("lab:"+string(hash)+"\n"), 0o600)
	addr := testport.Addr(t)
	cfg := fmt.Sprintf("version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n", filepath.Join(dir, "data"), addr)
	want := http.StatusOK
	if auth {
		cfg += fmt.Sprintf("auth: {htpasswd: {realm: capstan-test, path: %s}}\n", filepath.Join(dir, "htpasswd"))
		want = http.StatusUnauthorized
	}
	_ = os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600)
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 10*time.Second, "the registry answers", func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == want
	})
	return addr
}
