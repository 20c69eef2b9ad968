package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

// labExample is the example app the e2e tests deploy (2 web hosts behind
// the lab's HAProxy, 1 worker host with an accessory). Absolute: tests
// change directory.
var labExample = func() string {
	p, err := filepath.Abs("../../examples/lab")
	if err != nil {
		panic(err)
	}
	return p
}()

// labDeployYML returns examples/lab's deploy.yml with another version,
// extra root keys and extra x-capstan keys.
func labDeployYML(t testing.TB, version, rootExtra, capstanExtra string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(labExample, "config", "deploy.yml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "  version: v1\n", "  version: "+version+"\n", 1)
	s = strings.Replace(s, "\nx-capstan:\n", "\n"+rootExtra+"x-capstan:\n", 1)
	return s + capstanExtra
}

// labSecrets is examples/lab's .kamal/secrets.
func labSecrets(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(labExample, ".kamal", "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// e2eApp is an app repository directory and the environment capstan runs
// with against the lab.
type e2eApp struct {
	t   testing.TB
	l   *lab.Lab
	dir string
	env map[string]string
}

func newE2EApp(t testing.TB, n int) *e2eApp {
	t.Helper()
	l := startLab(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	a := &e2eApp{t: t, l: l, dir: t.TempDir(), env: map[string]string{
		"CAPSTAN_KNOWN_HOSTS":         l.KnownHosts,
		"CAPSTAN_IDENTITY":            l.Identity,
		"CAPSTAN_STATE_DIR":           t.TempDir(),
		"CAPSTAN_INSECURE_REGISTRIES": l.RegistryAddr,
		"LAB_REGISTRY_PASSWORD":       "lab-registry-password",
		"DEMO_SECRET_KEY":             "s3cret-value-1",
	}}
	if err := os.MkdirAll(filepath.Join(a.dir, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	a.write(".kamal/secrets", labSecrets(t))
	a.configure("v1", "", "")
	return a
}

func (a *e2eApp) write(name, content string) {
	a.t.Helper()
	p := filepath.Join(a.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

// configure writes deploy.yml with a version, extra root keys and extra
// x-capstan keys.
func (a *e2eApp) configure(version, rootExtra, capstanExtra string) {
	a.write("config/deploy.yml", labDeployYML(a.t, version, rootExtra, capstanExtra))
}

// capstan runs the CLI in the app directory and returns its output.
func (a *e2eApp) capstan(args ...string) (string, error) {
	a.t.Helper()
	a.t.Chdir(a.dir)
	for k, v := range a.env {
		a.t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"--log-level", "warn", "--log-format", "json"}, args...), &out, &errb)
	if testing.Verbose() {
		a.t.Logf("capstan %s:\n%s%s", strings.Join(args, " "), out.String(), errb.String())
	}
	auditSecrets(a.t, "the output of capstan "+strings.Join(args, " "), append(out.Bytes(), errb.Bytes()...))
	return out.String() + errb.String(), err
}

// editConfig replaces, in deploy.yml, each old string (pairs old, new)
// once; a missing one fails the test.
func (a *e2eApp) editConfig(pairs ...string) {
	a.t.Helper()
	p := filepath.Join(a.dir, "config", "deploy.yml")
	b, err := os.ReadFile(p)
	if err != nil {
		a.t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			a.t.Fatalf("deploy.yml lacks %q", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	a.write("config/deploy.yml", s)
}

// applyUnderLoad applies while both web hosts take continuous traffic and
// fails the test on any failed request.
func (a *e2eApp) applyUnderLoad(what string) string {
	a.t.Helper()
	ld := startLoad(webAddrs)
	time.Sleep(300 * time.Millisecond)
	out := a.mustApply()
	time.Sleep(300 * time.Millisecond)
	ld.finish(a.t, what)
	return out
}

func (a *e2eApp) mustApply(args ...string) string {
	a.t.Helper()
	out, err := a.capstan(append([]string{"apply"}, args...)...)
	if err != nil {
		a.t.Fatalf("apply: %v\n%s", err, out)
	}
	return out
}

// sh runs a shell script on lab host i (not over SSH).
func (a *e2eApp) sh(i int, script string) string {
	a.t.Helper()
	out, err := a.l.Exec(context.Background(), i, "sh", "-c", script)
	if err != nil {
		a.t.Fatalf("%s: %s: %v\n%s", a.l.Hosts[i].Name, script, err, out)
	}
	return strings.TrimSpace(out)
}

// containers returns "name state" lines of the service's containers on
// host i, and their IDs by name.
func (a *e2eApp) containers(i int) (running map[string]string, all map[string]string) {
	a.t.Helper()
	out := a.sh(i, `docker ps -a --filter label=service=testapp --format '{{.Names}} {{.State}} {{.ID}}'`)
	running, all = map[string]string{}, map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		all[f[0]] = f[1]
		if f[1] == "running" {
			running[f[0]] = f[2]
		}
	}
	return running, all
}

// get fetches / through host i's proxy.
func get(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", addr, resp.Status, b)
	}
	return string(b)
}

// load sends continuous requests through the web hosts' proxies: keep-alive
// GETs, new-connection GETs and POSTs, never retried, until stop.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	failures     []string
	// spans holds, per target, when its first and last failures happened:
	// a fault on two hosts at different moments is two windows, not one.
	spans    map[string][2]time.Time
	versions map[string]int
	// first is when a response of each version first came back.
	first map[string]time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startLoad(targets []string) *load {
	ld := &load{stop: make(chan struct{}), versions: map[string]int{}, first: map[string]time.Time{}, spans: map[string][2]time.Time{}}
	keep := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, target := range targets {
		for kind := 0; kind < 3; kind++ {
			ld.wg.Add(1)
			go func() {
				defer ld.wg.Done()
				deadline := time.Now().Add(3 * time.Minute) // bounded, whatever happens
				for time.Now().Before(deadline) {
					select {
					case <-ld.stop:
						return
					default:
					}
					var resp *http.Response
					var err error
					sent := time.Now()
					switch kind {
					case 0:
						resp, err = keep.Get("http://" + target + "/")
					case 1:
						resp, err = fresh.Get("http://" + target + "/")
					default:
						req, _ := http.NewRequest(http.MethodPost, "http://"+target+"/", strings.NewReader(strings.Repeat("x", 2048)))
						// No GetBody: the transport cannot replay the POST.
						req.GetBody = nil
						resp, err = keep.Do(req)
					}
					ld.sent.Add(1)
					if err != nil {
						ld.fail(target, sent, fmt.Sprintf("%s kind %d: %v", target, kind, err))
						continue
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						ld.fail(target, sent, fmt.Sprintf("%s kind %d: %s %s", target, kind, resp.Status, b))
						continue
					}
					ld.mu.Lock()
					v := strings.Fields(string(b))[0]
					ld.versions[v]++
					if _, ok := ld.first[v]; !ok {
						ld.first[v] = time.Now()
					}
					ld.mu.Unlock()
				}
			}()
		}
	}
	return ld
}

// firstOf is when a response of version first came back (zero: never).
func (ld *load) firstOf(version string) time.Time {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.first[version]
}

// fail counts a failed request to target sent at sent; its failure is
// dated when it was sent (a request can wait out a retry in the proxy).
func (ld *load) fail(target string, sent time.Time, s string) {
	ld.failed.Add(1)
	ld.mu.Lock()
	now := time.Now()
	sp := ld.spans[target]
	if sp[0].IsZero() || sent.Before(sp[0]) {
		sp[0] = sent
	}
	if sent.After(sp[1]) {
		sp[1] = sent
	}
	ld.spans[target] = sp
	if len(ld.failures) < 10 {
		ld.failures = append(ld.failures, fmt.Sprintf("%s (+%s) %s", sent.UTC().Format("15:04:05.000"), now.Sub(sent).Round(time.Millisecond), s))
	}
	ld.mu.Unlock()
}

// finish stops the load and fails the test on any failed request.
func (ld *load) finish(t testing.TB, what string) {
	t.Helper()
	ld.finishWithin(t, what, 0)
}

// finishWithin stops the load and fails the test when requests to one
// target failed over more than window (from its first failure to its
// last); window 0 allows no failure at all. For a fault that takes a
// host's app down for a moment.
func (ld *load) finishWithin(t testing.TB, what string, window time.Duration) {
	t.Helper()
	close(ld.stop)
	ld.wg.Wait()
	sent, failed := ld.sent.Load(), ld.failed.Load()
	t.Logf("%s: %d requests sent, %d failed, answered by %v", what, sent, failed, ld.versions)
	if sent < 50 {
		t.Errorf("%s: only %d requests sent; the load did not run", what, sent)
	}
	if failed == 0 {
		return
	}
	var span time.Duration
	for _, sp := range ld.spans {
		span = max(span, sp[1].Sub(sp[0]))
	}
	switch {
	case window == 0:
		t.Errorf("%s: %d of %d requests failed: %v", what, failed, sent, ld.failures)
	case span > window:
		t.Errorf("%s: requests failed for %s, more than %s: %v", what, span, window, ld.failures)
	default:
		t.Logf("%s: the failures spanned %s (allowed %s): %v", what, span.Round(time.Millisecond), window, ld.failures)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
