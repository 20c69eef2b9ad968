package simfleet_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/simfleet"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// capstanBin builds cmd/capstan once per test binary.
func capstanBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "simfleet-capstan-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "capstan")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/capstan").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// simApp is an app repository whose deploy.yml lists a fleet's hosts.
type simApp struct {
	t     *testing.T
	fleet *simfleet.Fleet
	dir   string
	state string
	extra string // more x-capstan keys, indented
}

const secretValue = "sim-registry-password-1"

func newSimApp(t *testing.T, f *simfleet.Fleet, version string) *simApp {
	a := &simApp{t: t, fleet: f, dir: t.TempDir(), state: t.TempDir()}
	a.write(".kamal/secrets", "REGISTRY_PASSWORD=$SIM_REGISTRY_PASSWORD\n")
	a.configure(version)
	return a
}

func (a *simApp) write(name, content string) {
	p := filepath.Join(a.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

func (a *simApp) configure(version string) {
	a.write("config/deploy.yml", a.fleet.DeployYML("simapp", a.fleet.Hosts(), version,
		"env:\n  clear:\n    GREETING: hello\n  secret: [REGISTRY_PASSWORD]\n", a.extra))
}

// capstan runs the binary in the app directory.
func (a *simApp) capstan(args ...string) (string, error) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	level := os.Getenv("SIMFLEET_LOG_LEVEL") // debug shows every command and its time
	if level == "" {
		level = "warn"
	}
	cmd := exec.CommandContext(ctx, capstanBin(a.t), append([]string{"--log-level", level, "--log-format", "json"}, args...)...)
	cmd.Dir = a.dir
	cmd.Env = append(os.Environ(), "CAPSTAN_KNOWN_HOSTS="+a.fleet.KnownHosts(), "CAPSTAN_IDENTITY="+a.fleet.UserKey(),
		"CAPSTAN_STATE_DIR="+a.state, "SIM_REGISTRY_PASSWORD="+secretValue, "CAPSTAN_INSECURE_REGISTRIES="+a.fleet.Registry())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if testing.Verbose() {
		a.t.Logf("capstan %s:\n%s", strings.Join(args, " "), out.String())
	}
	return out.String(), err
}

func (a *simApp) mustApply() string {
	a.t.Helper()
	out, err := a.capstan("apply")
	if err != nil {
		a.t.Fatalf("apply: %v\n%s", err, out)
	}
	return out
}

func assertNoUnknown(t *testing.T, f *simfleet.Fleet) {
	t.Helper()
	if u := f.Stats().Unknown; len(u) > 0 {
		t.Errorf("%d commands the sim does not model:\n%s", len(u), strings.Join(u, "\n"))
	}
}

// TestFleet_DeployThenNoop: a real capstan apply deploys v1 on every host
// as Kamal would (names, labels, env file, audit log, proxy route, lock
// released), a second apply plans nothing, v2 switches every route, and
// the sim saw no command it does not model.
func TestFleet_DeployThenNoop(t *testing.T) {
	f := simfleet.Start(t, simfleet.Options{Hosts: 3})
	a := newSimApp(t, f, "v1")
	a.mustApply()
	assertNoUnknown(t, f)
	for i := range f.Hosts() {
		h := f.Host(i)
		var app *simfleet.Container
		cs := h.Containers()
		for j := range cs {
			if cs[j].Name == "simapp-web-v1" {
				app = &cs[j]
			}
		}
		if app == nil || app.State != "running" {
			t.Fatalf("host %d: no running simapp-web-v1 in %+v", i, cs)
		}
		if app.Labels["service"] != "simapp" || app.Labels["role"] != "web" || app.Labels["capstan.fingerprint"] == "" {
			t.Errorf("host %d: labels %v", i, app.Labels)
		}
		if _, ok := app.Labels["destination"]; !ok {
			t.Errorf("host %d: no destination label (Kamal sets it, empty): %v", i, app.Labels)
		}
		r, ok := h.Routes()["simapp-web"]
		if !ok || !strings.HasPrefix(app.ID, strings.Split(r.Target, ":")[0]) {
			t.Errorf("host %d: route %+v does not point at %s", i, r, app.ID)
		}
		if env, ok := h.File(".kamal/apps/simapp/env/roles/web.env"); !ok || !strings.Contains(env, "REGISTRY_PASSWORD=") {
			t.Errorf("host %d: env file %q", i, env)
		}
		if log, _ := h.File(".kamal/simapp-audit.log"); !strings.Contains(log, "Booted app version v1") {
			t.Errorf("host %d: audit log %q", i, log)
		}
	}
	if f.Host(0).Dir(".kamal/lock-simapp") {
		t.Error("the deploy lock is still held after apply")
	}
	if n := len(f.Stats().Switches); n != 3 {
		t.Errorf("%d proxy switches, want 3", n)
	}

	f.ResetStats()
	out, err := a.capstan("plan")
	if err != nil || strings.Count(out, "up to date") != 3 {
		t.Errorf("plan after apply (%v):\n%s", err, out)
	}
	a.mustApply()
	st := f.Stats()
	if len(st.Switches) != 0 || st.Commands["docker create"] != 0 {
		t.Errorf("a no-op apply switched %d routes and created %d containers", len(st.Switches), st.Commands["docker create"])
	}
	assertNoUnknown(t, f)

	a.configure("v2")
	a.mustApply()
	for i := range f.Hosts() {
		r := f.Host(i).Routes()["simapp-web"]
		for _, c := range f.Host(i).Containers() {
			if c.Name == "simapp-web-v2" && (c.State != "running" || !strings.HasPrefix(c.ID, strings.Split(r.Target, ":")[0])) {
				t.Errorf("host %d: v2 %s, route %+v", i, c.State, r)
			}
			if c.Name == "simapp-web-v1" && c.State == "running" {
				t.Errorf("host %d: v1 still running after v2", i)
			}
		}
	}
	assertNoUnknown(t, f)
}

// TestFleet_DeadHost: a host that refuses connections is reported
// unreachable, by address, while the others converge.
func TestFleet_DeadHost(t *testing.T) {
	f := simfleet.Start(t, simfleet.Options{Hosts: 3})
	if err := f.Host(2).SetFault(simfleet.Refuse); err != nil {
		t.Fatal(err)
	}
	a := newSimApp(t, f, "v1")
	out, err := a.capstan("apply")
	if err == nil {
		t.Fatalf("apply succeeded with a dead host:\n%s", out)
	}
	if !strings.Contains(out, f.Hosts()[2]) || !strings.Contains(strings.ToLower(out), "unreachable") {
		t.Errorf("the output does not report %s unreachable:\n%s", f.Hosts()[2], out)
	}
	for i := 0; i < 2; i++ {
		if _, ok := f.Host(i).Routes()["simapp-web"]; !ok {
			t.Errorf("host %d did not converge while host 2 was dead", i)
		}
	}
	if n := len(f.Host(2).Containers()); n != 0 {
		t.Errorf("the dead host has %d containers", n)
	}
	assertNoUnknown(t, f)

	// Back up: the next apply converges it.
	if err := f.Host(2).SetFault(simfleet.Healthy); err != nil {
		t.Fatal(err)
	}
	a.mustApply()
	if _, ok := f.Host(2).Routes()["simapp-web"]; !ok {
		t.Error("host 2 did not converge once it was back")
	}
}

// TestFleet_HAProxy: with the haproxy driver, a deploy boots HAProxy,
// health-checks the new container and adds it to its backend through the
// runtime API; a no-op apply changes nothing; v2 replaces the server.
func TestFleet_HAProxy(t *testing.T) {
	f := simfleet.Start(t, simfleet.Options{Hosts: 2})
	a := newSimApp(t, f, "v1")
	a.extra = "  proxy: haproxy\n  haproxy:\n    image: haproxy:lab\n"
	a.configure("v1")
	a.mustApply()
	assertNoUnknown(t, f)
	servesVersion := func(version string) {
		t.Helper()
		for i := range f.Hosts() {
			h := f.Host(i)
			var ip string
			for _, c := range h.Containers() {
				if c.Name == "simapp-web-"+version && c.State == "running" {
					ip = c.IP
				}
			}
			got := h.HAProxyServers()["simapp-web"]
			if ip == "" || len(got) != 1 || got[0] != ip+":3000" {
				t.Errorf("host %d: backend serves %v, want the %s container (%s:3000)", i, got, version, ip)
			}
		}
	}
	servesVersion("v1")
	f.ResetStats()
	a.mustApply()
	if st := f.Stats(); st.Commands["docker create"] != 0 || st.Commands["haproxy add server"] != 0 {
		t.Errorf("a no-op apply changed things: %v", st.Commands)
	}
	a.configure("v2")
	a.mustApply()
	servesVersion("v2")
	assertNoUnknown(t, f)
	if st := f.Stats(); st.Commands["haproxy add server"] != 2 || st.Commands["haproxy del server"] != 2 || st.Commands["http GET"] == 0 {
		t.Errorf("v2 did not switch through the runtime API after a health check: %v", st.Commands)
	}
}

// TestFleet_RolesAccessoryJobs: a web role, a worker role, an accessory
// with a secret and a pre-deploy job deploy on the sim, and a second
// apply plans nothing, with no command the sim does not model.
func TestFleet_RolesAccessoryJobs(t *testing.T) {
	f := simfleet.Start(t, simfleet.Options{Hosts: 3})
	a := newSimApp(t, f, "v1")
	a.write("config/deploy.yml", fmt.Sprintf(`service: simapp
image: simapp
servers:
  web:
    hosts: [%[1]s, %[2]s]
  worker:
    hosts: [%[3]s]
    cmd: bin/worker
proxy:
  app_port: 3000
registry:
  server: %[4]s
  username: sim
  password: [REGISTRY_PASSWORD]
builder:
  arch: amd64
ssh:
  port: %[5]d
readiness_delay: 0
env:
  secret: [REGISTRY_PASSWORD]
accessories:
  cache:
    image: %[4]s/cache:v1
    host: %[3]s
    directories: [data:/data]
    env:
      clear:
        PORT: "6379"
x-capstan:
  version: v1
  bake: 0
  jobs:
    - name: migrate
      role: web
      cmd: bin/migrate
`, f.Hosts()[0], f.Hosts()[1], f.Hosts()[2], f.Registry(), f.Port()))
	a.mustApply()
	assertNoUnknown(t, f)
	names := map[string]string{}
	for _, c := range f.Host(2).Containers() {
		names[c.Name] = c.State
	}
	if names["simapp-worker-v1"] != "running" || names["simapp-cache"] != "running" {
		t.Errorf("worker host runs %v", names)
	}
	f.ResetStats()
	out, err := a.capstan("plan")
	if err != nil || strings.Count(out, "up to date") != 3 {
		t.Errorf("plan after apply (%v):\n%s", err, out)
	}
	assertNoUnknown(t, f)

	// v2: the worker is replaced (stopped with its drain timeout), the
	// accessory left alone.
	yml, _ := os.ReadFile(filepath.Join(a.dir, "config", "deploy.yml"))
	a.write("config/deploy.yml", strings.Replace(string(yml), "version: v1", "version: v2", 1))
	a.mustApply()
	names = map[string]string{}
	for _, c := range f.Host(2).Containers() {
		names[c.Name] = c.State
	}
	if names["simapp-worker-v2"] != "running" || names["simapp-worker-v1"] == "running" || names["simapp-cache"] != "running" {
		t.Errorf("worker host after v2: %v", names)
	}
	if st := f.Stats(); st.Commands["docker run"] != 1 { // the pre-deploy job; the accessory is not rebooted
		t.Errorf("v2 ran %d containers with docker run: %v", st.Commands["docker run"], st.Commands)
	}
	assertNoUnknown(t, f)
}
