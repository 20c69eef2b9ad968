package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

// syncBuffer collects a subprocess's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildCapstan builds the binary once per test binary.
var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func capstanBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "capstan-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "capstan")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// gitWork is a working clone that pushes to a remote.
type gitWork struct {
	t   *testing.T
	dir string
	env []string
}

func (g *gitWork) git(args ...string) string {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(), g.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes deploy.yml (and secrets) and pushes; it returns the SHA.
func (g *gitWork) commit(deployYML, msg string) string {
	g.t.Helper()
	_ = os.MkdirAll(filepath.Join(g.dir, "config"), 0o755)
	_ = os.MkdirAll(filepath.Join(g.dir, ".kamal"), 0o755)
	if err := os.WriteFile(filepath.Join(g.dir, "config/deploy.yml"), []byte(deployYML), 0o644); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, ".kamal/secrets"), []byte(labSecrets(g.t)), 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.git("add", "-A")
	g.git("commit", "-q", "-m", msg)
	g.git("push", "-q", "origin", "HEAD:"+g.git("rev-parse", "--abbrev-ref", "HEAD"))
	return g.git("rev-parse", "HEAD")
}

// sshRemote makes a bare repository on the first lab host, reached over
// SSH as root (its sshd, the lab's identity and known_hosts), and a work
// clone pushing to it.
func sshRemote(t *testing.T, l *lab.Lab) (repo string, w *gitWork) {
	t.Helper()
	(&e2eApp{t: t, l: l}).sh(0, "rm -rf /root/app.git && git init -q --bare -b main /root/app.git")
	w = &gitWork{t: t, dir: t.TempDir(), env: append(gitEnv(),
		"GIT_SSH_COMMAND=ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="+l.KnownHosts+" -i "+l.Identity)}
	w.git("init", "-q", "-b", "main", ".")
	repo = "ssh://root@" + l.Hosts[0].Addr + "/root/app.git"
	w.git("remote", "add", "origin", repo)
	return repo, w
}

func gitEnv() []string {
	return []string{"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com", "GIT_COMMITTER_NAME=Ada",
		"GIT_COMMITTER_EMAIL=ada@example.com", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
}

// localRemote makes a bare repository in a temp dir and a work clone.
func localRemote(t *testing.T) (bare string, w *gitWork) {
	t.Helper()
	bare = filepath.Join(t.TempDir(), "app.git")
	w = &gitWork{t: t, dir: t.TempDir(), env: gitEnv()}
	w.git("init", "-q", "--bare", "-b", "main", bare)
	w.git("init", "-q", "-b", "main", ".")
	w.git("remote", "add", "origin", bare)
	return bare, w
}

// serveProc is a running `capstan serve` subprocess.
type serveProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	addr  string
	logs  *syncBuffer
	cfg   string
	env   []string
	token string
	repo  string // the app's repository URL
	// pastLogs are the logs of earlier runs (before a restart).
	pastLogs string
	// baseCfg is capstan.yml as first written (restartWith edits a copy).
	baseCfg []byte
	exited  chan struct{}
}

type serveOpts struct {
	repo, sshKey, knownHosts string
	poll, drift              string
	selfHeal                 bool
	alertURL                 string
	extraApps                string
	// insecure is capstan.yml's insecure_registries list; "" = the lab's.
	insecure string
	// appExtra holds more keys of the testapp app, each line indented.
	appExtra string
	// top holds more top-level keys of capstan.yml; env more variables
	// of the daemon's environment.
	top string
	env []string
}

func startServe(t *testing.T, l *lab.Lab, o serveOpts) *serveProc {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if o.poll == "" {
		o.poll = "60s"
	}
	if o.drift == "" {
		o.drift = "@every 1h"
	}
	if o.insecure == "" {
		o.insecure = l.RegistryAddr
	}
	alerts := ""
	if o.alertURL != "" {
		alerts = "alerts:\n  - {type: webhook, url: " + o.alertURL + "}\n"
	}
	git := ""
	if o.sshKey != "" {
		git = fmt.Sprintf("    git: {ssh_key: %s, known_hosts: %s}\n", o.sshKey, o.knownHosts)
	}
	cfg := fmt.Sprintf(`listen: %s
state_dir: %s
ssh: {known_hosts: %s, identity: %s}
secrets_env_file: %s
insecure_registries: [%s]
image_wait: 90s
webhooks: {github_secret_env: GH_SECRET}
api_token_env: API_TOKEN
%s%sapps:
  - name: testapp
    repo: %s
    branch: main
    poll: %s
    drift_schedule: "%s"
    self_heal: %v
%s%s%s`, addr, filepath.Join(dir, "state"), l.KnownHosts, l.Identity, filepath.Join(dir, "secrets.env"), o.insecure,
		o.top, alerts, o.repo, o.poll, o.drift, o.selfHeal, o.appExtra, git, o.extraApps)
	if err := os.WriteFile(filepath.Join(dir, "secrets.env"), []byte("DEMO_SECRET_KEY=s3cret-value-1\nLAB_REGISTRY_PASSWORD=lab-registry-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "capstan.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &serveProc{t: t, addr: addr, cfg: cfgPath, token: "api-token-123", repo: o.repo,
		env: append(append(os.Environ(), "GH_SECRET=gh-secret", "API_TOKEN=api-token-123", "HOME="+dir), o.env...)}
	d.start()
	t.Cleanup(func() {
		d.auditLive()
		d.stop()
		d.auditKept()
	})
	return d
}

func (d *serveProc) start() {
	d.t.Helper()
	if d.logs != nil {
		d.pastLogs += d.logs.String()
	}
	d.logs = &syncBuffer{}
	d.cmd = exec.Command(capstanBinary(d.t), "--log-format", "json", "--log-level", "debug", "serve", "--config", d.cfg)
	d.cmd.Env = d.env
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + d.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-d.exited:
			d.t.Fatalf("capstan serve exited:\n%s", d.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("capstan serve not ready:\n%s", d.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *serveProc) stop() {
	if d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	if d.t.Failed() || os.Getenv("CAPSTAN_E2E_SERVE_LOG") != "" {
		d.t.Logf("capstan serve log:\n%s", d.logs.String())
	}
}

func (d *serveProc) kill9() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// status reads the app's view from the JSON API.
func (d *serveProc) status(app string) map[string]any {
	d.t.Helper()
	code, body := d.get("/api/v1/apps/"+app, "Bearer "+d.token)
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		d.t.Fatalf("GET /api/v1/apps/%s: %d: %v", app, code, err)
	}
	return v
}

// get fetches path from the daemon with the Authorization header auth
// ("" sends none) and returns the status and body.
func (d *serveProc) get(path, auth string) (int, []byte) {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// pageURL is the status page's address with the token as the basic-auth
// password, as a browser user would log in.
func (d *serveProc) pageURL() string { return "http://capstan:" + d.token + "@" + d.addr + "/" }

// waitIdle waits until no pass runs and the last one ended with one of
// outcomes.
func (d *serveProc) waitIdle(outcomes ...string) {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := d.status("testapp")
		for _, o := range outcomes {
			if st["running"] == false && st["last_outcome"] == o {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("app did not settle on %v: %v", outcomes, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logTime finds the first log line containing all parts and returns its
// time.
func (d *serveProc) logTime(parts ...string) (time.Time, bool) {
	return d.logTimeAfter(time.Time{}, parts...)
}

// logTimeAfter is logTime for lines logged after after.
func (d *serveProc) logTimeAfter(after time.Time, parts ...string) (time.Time, bool) {
	for _, line := range strings.Split(d.logs.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if !ok {
			continue
		}
		var v struct{ Time time.Time }
		if json.Unmarshal([]byte(line), &v) == nil && v.Time.After(after) {
			return v.Time, true
		}
	}
	return time.Time{}, false
}

// rssKiB reads the daemon's resident set size.
func (d *serveProc) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var n int
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	return 0
}

// peakRSSWhile samples the RSS while f runs.
func (d *serveProc) peakRSSWhile(f func()) int {
	done, result := make(chan struct{}), make(chan int)
	go func() {
		peak := 0
		for {
			if r := d.rssKiB(); r > peak {
				peak = r
			}
			select {
			case <-done:
				result <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	f()
	close(done)
	return <-result
}

func (d *serveProc) post(path string, body []byte, headers map[string]string) int {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+d.addr+path, bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitServing waits until every web host answers version.
func waitServing(t *testing.T, version string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		ok := 0
		for _, addr := range webAddrs {
			if resp, err := c.Get("http://" + addr + "/"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.HasPrefix(string(b), version+" ") {
					ok++
				}
			}
		}
		if ok == len(webAddrs) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("hosts did not serve %s within %s", version, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func deployYML(t testing.TB, version string) string { return labDeployYML(t, version, "", "") }

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

// browserDOM loads url in headless Chromium (Debian's package) and returns
// the DOM it rendered. Without Chromium it returns "" and false (a failure
// when CI=true).
func browserDOM(t *testing.T, url string) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (.ci/setup installs it)")
		}
		t.Log("browser check skipped: chromium is not installed")
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--dump-dom", url)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errb.String())
	}
	return out.String(), true
}

// copyTag gives an existing image a new tag in the lab registry.
func copyTag(t *testing.T, reg, from, to string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg+"/v2/testapp/manifests/"+from, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodPut, "http://"+reg+"/v2/testapp/manifests/"+to, bytes.NewReader(m))
	req.Header.Set("Content-Type", resp.Header.Get("Content-Type"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %s", resp.Status)
	}
}

// gitHTTP serves bare repositories under root with git http-backend.
func gitHTTP(t *testing.T, root string) *httptest.Server {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	h := &cgi.Handler{Path: gitPath, Args: []string{"http-backend"}, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	return httptest.NewServer(h)
}
