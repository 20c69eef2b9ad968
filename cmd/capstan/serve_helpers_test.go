package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/capstan-dev/capstan/internal/testport"
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

// buildCapstan builds the capstan binary once per test binary.
var buildCapstan = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "capstan-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "capstan")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// capstanBinary is the capstan binary of this checkout, built once.
func capstanBinary(tb testing.TB) string {
	tb.Helper()
	bin, err := buildCapstan()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
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
	addr := testport.Addr(t)
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
	cfg := serveHead(t, l, dir, addr, o.insecure) + fmt.Sprintf(`%s%sapps:
  - name: testapp
    repo: %s
    branch: main
    poll: %s
    drift_schedule: "%s"
    self_heal: %v
%s%s%s`, o.top, alerts, o.repo, o.poll, o.drift, o.selfHeal, o.appExtra, git, o.extraApps)
	d := newServeProc(t, dir, addr, cfg, o.repo, o.env)
	d.start()
	t.Cleanup(func() {
		d.auditLive()
		d.stop()
		d.auditKept()
	})
	return d
}

// serveHead is the top of a capstan.yml for the lab in dir (listening on
// addr): state, SSH, the secrets file (written), registries, the GitHub
// webhook secret and the API token.
func serveHead(t *testing.T, l *lab.Lab, dir, addr, insecure string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "secrets.env"), []byte("DEMO_SECRET_KEY=s3cret-value-1\nLAB_REGISTRY_PASSWORD=lab-registry-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`listen: %s
state_dir: %s
ssh: {known_hosts: %s, identity: %s}
secrets_env_file: %s
insecure_registries: [%s]
image_wait: 90s
webhooks: {github_secret_env: GH_SECRET}
api_token_env: API_TOKEN
`, addr, filepath.Join(dir, "state"), l.KnownHosts, l.Identity, filepath.Join(dir, "secrets.env"), insecure)
}

// newServeProc writes cfg as dir's capstan.yml and returns the (not yet
// started) daemon for it, with the test's tokens and env in its
// environment.
func newServeProc(t *testing.T, dir, addr, cfg, repo string, env []string) *serveProc {
	t.Helper()
	path := filepath.Join(dir, "capstan.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &serveProc{t: t, addr: addr, cfg: path, token: "api-token-123", repo: repo,
		env: append(append(os.Environ(), "GH_SECRET=gh-secret", "API_TOKEN=api-token-123", "HOME="+dir), env...)}
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
