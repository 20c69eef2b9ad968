package reconcile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

const testDeploy = `service: testapp
image: testapp
servers:
  web:
    hosts: [10.0.0.1, 10.0.0.2]
  worker:
    hosts: [10.0.0.3]
    cmd: worker
proxy:
  app_port: 3000
  healthcheck:
    path: /up
    interval: 1
registry:
  server: 10.231.0.1:5000
  username: lab
  password: [REGISTRY_PASSWORD]
env:
  secret: [SECRET_KEY]
retain_containers: 2
builder:
  arch: amd64
`

func testApp(t *testing.T, version string) *App {
	t.Helper()
	fsys := fstest.MapFS{
		"config/deploy.yml": {Data: []byte(testDeploy)},
		".kamal/secrets":    {Data: []byte("REGISTRY_PASSWORD=pw\nSECRET_KEY=s3cret-value\n")},
	}
	cfg, err := kamal.Load(fsys, kamal.LoadOptions{Version: version, FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	plans, err := cfg.Plans()
	if err != nil {
		t.Fatal(err)
	}
	return &App{Config: cfg, Hosts: plans, ProxyContainer: "kamal-proxy"}
}

// ps renders containers the way ObserveArgv's docker ps prints them.
func ps(t *testing.T, cs ...Container) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, c := range cs {
		line, _ := json.Marshal(map[string]string{
			"id": c.ID, "name": c.Name, "image": c.Image, "state": c.State, "status": c.Status,
			"created": c.Created.UTC().Format("2006-01-02 15:04:05 -0700 MST"),
			"service": c.Service, "role": c.Role, "destination": c.Destination,
			"labels": "destination=,role=" + c.Role + ",service=" + c.Service, "fingerprint": c.Fingerprint, "networks": "kamal",
		})
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteString(observeMarker + "\n/root\n" + observeMarker + "\n")
	return b.Bytes()
}

func observed(t *testing.T, host string, cs ...Container) *Observed {
	t.Helper()
	o, err := ParseObserve(host, ps(t, cs...))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func running(a *App, host, role, version string) Container {
	name := "testapp-" + role + "-" + version
	fp := ""
	for _, hp := range a.Hosts {
		if hp.Host == host {
			for _, c := range hp.Apps {
				if c.Role == role && c.Name == name {
					fp = c.Fingerprint
				}
			}
		}
	}
	return Container{ID: "id-" + name, Name: name, Image: "testapp:" + version, State: "running", Status: "Up 1 minute",
		Service: "testapp", Role: role, Fingerprint: fp}
}

func proxyC() Container {
	return Container{ID: "p", Name: "kamal-proxy", State: "running", Status: "Up"}
}

func steps(hp *HostPlan) []string {
	var out []string
	for _, s := range hp.Steps {
		out = append(out, s.String())
	}
	return out
}

func kinds(hp *HostPlan) []string {
	var out []string
	for _, d := range hp.Drift {
		out = append(out, string(d.Kind))
	}
	return out
}

func TestPlan_FreshHostBootsEverything(t *testing.T) {
	a := testApp(t, "v1")
	hp := a.planHost(a.Hosts[0], observed(t, "10.0.0.1"))
	got := strings.Join(steps(hp), "\n")
	want := "boot proxy: not running (missing)\ndeploy web v1: missing"
	if got != want {
		t.Errorf("steps:\n%s\nwant:\n%s", got, want)
	}
}

func TestPlan_UpToDateHostHasNoSteps(t *testing.T) {
	a := testApp(t, "v1")
	hp := a.planHost(a.Hosts[0], observed(t, "10.0.0.1", running(a, "10.0.0.1", "web", "v1"), proxyC()))
	if len(hp.Steps) != 0 || len(hp.Drift) != 0 {
		t.Errorf("steps %v drift %v", steps(hp), hp.Drift)
	}
}

func TestPlan_VersionChange(t *testing.T) {
	old := testApp(t, "v1")
	a := testApp(t, "v2")
	hp := a.planHost(a.Hosts[0], observed(t, "10.0.0.1", running(old, "10.0.0.1", "web", "v1"), proxyC()))
	if got := steps(hp); len(got) != 1 || got[0] != "deploy web v1→v2: version changed" {
		t.Errorf("steps %q", got)
	}
	if got := kinds(hp); len(got) != 1 || got[0] != string(DriftWrongVersion) {
		t.Errorf("drift %v", hp.Drift)
	}
	if s := hp.Steps[0]; s.From != "testapp-web-v1" || s.Container != "testapp-web-v2" {
		t.Errorf("step %+v", s)
	}
}

func TestPlan_EnvChangeRebootsSameVersion(t *testing.T) {
	a := testApp(t, "v1")
	c := running(a, "10.0.0.1", "web", "v1")
	c.Fingerprint = "0000" // booted with other env
	hp := a.planHost(a.Hosts[0], observed(t, "10.0.0.1", c, proxyC()))
	got := steps(hp)
	if len(got) != 1 || !strings.HasPrefix(got[0], "reboot web v1: spec changed") {
		t.Errorf("steps %q", got)
	}
	if k := kinds(hp); len(k) != 1 || k[0] != string(DriftSpecChanged) {
		t.Errorf("drift %v", hp.Drift)
	}
}

func TestPlan_StoppedMissingUnmanagedStale(t *testing.T) {
	a := testApp(t, "v2")
	old := testApp(t, "v1")
	stopped := running(a, "10.0.0.1", "web", "v2")
	stopped.State, stopped.Status = "exited", "Exited (0) 1 minute ago"
	hand := Container{ID: "h", Name: "happy_turing", Image: "testapp:v2", State: "running", Service: "testapp"}
	hp := a.planHost(a.Hosts[0], observed(t, "10.0.0.1", stopped, hand, proxyC()))
	if got := steps(hp); len(got) != 1 || got[0] != "deploy web v2: container exited" {
		t.Errorf("stopped: steps %q", got)
	}
	if k := strings.Join(kinds(hp), ","); k != "stopped,unmanaged-container" {
		t.Errorf("stopped: drift %v", hp.Drift)
	}
	// Two versions running: the newest is current, the other stale.
	v1 := running(old, "10.0.0.1", "web", "v1")
	v2 := running(a, "10.0.0.1", "web", "v2")
	hp = a.planHost(a.Hosts[0], observed(t, "10.0.0.1", v2, v1, proxyC()))
	if got := steps(hp); len(got) != 1 || got[0] != "stop stale testapp-web-v1: not the current version" {
		t.Errorf("stale: steps %q", got)
	}
	// Worker host: nothing running, no proxy needed there.
	hp = a.planHost(a.Hosts[2], observed(t, "10.0.0.3"))
	if got := steps(hp); len(got) != 1 || got[0] != "deploy worker v2: missing" {
		t.Errorf("worker: steps %q", got)
	}
}

func TestPlan_PruneBeyondRetain(t *testing.T) {
	a := testApp(t, "v9")
	cs := []Container{running(a, "10.0.0.1", "web", "v9"), proxyC()}
	for i := 8; i >= 4; i-- {
		c := running(testApp(t, fmt.Sprint("v", i)), "10.0.0.1", "web", fmt.Sprint("v", i))
		c.State = "exited"
		cs = append(cs, c)
	}
	hp := a.planHost(a.Hosts[0], observed(t, "10.0.0.1", cs...))
	if got := steps(hp); len(got) != 1 || got[0] != "prune 3 containers beyond retain_containers" {
		t.Fatalf("steps %q", got)
	}
	if r := hp.Steps[0].Remove; strings.Join(r, ",") != "testapp-web-v6,testapp-web-v5,testapp-web-v4" {
		t.Errorf("prune removes %v, want the oldest three", r)
	}
}

func TestPlan_StaleLockIsDrift(t *testing.T) {
	a := testApp(t, "v1")
	o := observed(t, "10.0.0.1", running(a, "10.0.0.1", "web", "v1"), proxyC())
	o.Lock = "Locked by: someone at 2020-01-01T00:00:00Z\nVersion: v0\nMessage: manual"
	hp := a.planHost(a.Hosts[0], o)
	if k := kinds(hp); len(k) != 1 || k[0] != string(DriftStaleLock) {
		t.Errorf("drift %v", hp.Drift)
	}
}

func TestPlan_JSONHasNoSecrets(t *testing.T) {
	a := testApp(t, "v1")
	p := &Plan{Service: "testapp", Version: "v1", Hosts: []*HostPlan{a.planHost(a.Hosts[0], observed(t, "10.0.0.1"))}}
	var b bytes.Buffer
	if err := p.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	p.WriteText(&b)
	if strings.Contains(b.String(), "s3cret-value") || strings.Contains(b.String(), "pw\n") {
		t.Errorf("plan output leaks a secret:\n%s", b.String())
	}
}

func TestParseObserve_Sections(t *testing.T) {
	out := []byte(`{"id":"abc","name":"testapp-web-v1","image":"i","state":"running","status":"Up 2 minutes (healthy)","created":"2026-11-26 05:42:24 +0000 UTC","service":"testapp","role":"web","destination":"","labels":"destination=,role=web,service=testapp,x=a,b","fingerprint":"ff","title":"","networks":"kamal"}
` + observeMarker + "\n/home/deploy\n" + observeMarker + "\nTG9ja2VkIGJ5OiBtZQ==\n")
	o, err := ParseObserve("h", out)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Containers) != 1 || o.Home != "/home/deploy" || o.Lock != "Locked by: me" {
		t.Fatalf("%+v", o)
	}
	c := o.Containers[0]
	if !c.HasDest || c.Health() != "healthy" || c.Fingerprint != "ff" || c.Created.IsZero() {
		t.Errorf("%+v", c)
	}
	if _, err := ParseObserve("h", []byte("garbage")); err == nil {
		t.Error("garbage output parsed")
	}
}

func TestBootGroups(t *testing.T) {
	hs := []*HostPlan{{Host: "a"}, {Host: "b"}, {Host: "c"}}
	for limit, want := range map[string]string{"": "abc", "1": "a|b|c", "2": "ab|c", "50%": "a|b|c", "67%": "ab|c"} {
		var parts []string
		for _, g := range bootGroups(hs, limit) {
			parts = append(parts, strings.Join(names(g), ""))
		}
		if got := strings.Join(parts, "|"); got != want {
			t.Errorf("limit %q: %s, want %s", limit, got, want)
		}
	}
}

// TestRouteProblem_AddressMoved: a route whose target names the container
// but points at an address it no longer has (dockerd restarted, the
// container came back elsewhere) is a wrong route; an unknown address on
// either side (kamal-proxy routes by name, the script observes no address)
// is not.
func TestRouteProblem_AddressMoved(t *testing.T) {
	c := &Container{ID: "0123456789abcdef", Name: "app-web-v1", IP: "172.18.0.3"}
	route := func(ip string) map[string]proxy.LiveRoute {
		tg := proxy.Target{Container: "0123456789ab", Port: 3000}
		if ip != "" {
			tg.IP = netip.MustParseAddr(ip)
		}
		return map[string]proxy.LiveRoute{"app-web": {Name: "app-web", State: "running", Targets: []proxy.Target{tg}}}
	}
	if why := routeProblem(route("172.18.0.3"), "app-web", c); why != "" {
		t.Errorf("same address: %q", why)
	}
	if why := routeProblem(route(""), "app-web", c); why != "" {
		t.Errorf("route without address: %q", why)
	}
	why := routeProblem(route("172.18.0.2"), "app-web", c)
	if !strings.Contains(why, "at 172.18.0.2, but it now has 172.18.0.3") {
		t.Errorf("moved address: %q", why)
	}
	noIP := *c
	noIP.IP = ""
	if why := routeProblem(route("172.18.0.2"), "app-web", &noIP); why != "" {
		t.Errorf("container address unknown: %q", why)
	}
}

// TestParseObserve_Addresses: the script's "ip ID ADDRESS/PREFIX" lines
// (from `docker network inspect kamal`) give containers their address;
// a container not on the network has none.
func TestParseObserve_Addresses(t *testing.T) {
	out := ps(t, Container{ID: "aaa", Name: "web", State: "running"}, Container{ID: "bbb", Name: "worker", State: "running"})
	// Without a Docker config file grep prints no currentContext line:
	// the address lines follow DOCKER_CONTEXT's at once.
	for _, ctxLine := range []string{"", "\"currentContext\": \"rootless\"\n"} {
		in := bytes.Replace(out, []byte("/root\n"), []byte("/root\n\n\n"+ctxLine+"ip aaa 172.18.0.7/16\nip zzz 172.18.0.9/16\nnot an ip line\n"), 1)
		o, err := ParseObserve("h", in)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range o.Containers {
			got[c.Name] = c.IP
		}
		wantCtx := ""
		if ctxLine != "" {
			wantCtx = "rootless"
		}
		if got["web"] != "172.18.0.7" || got["worker"] != "" || o.Home != "/root" || o.DockerContext != wantCtx {
			t.Errorf("context line %q: addresses %v, home %q, context %q", ctxLine, got, o.Home, o.DockerContext)
		}
	}
}

// TestPlan_DetachedFromNetwork: a running app container or proxy that is
// off the app's network (its network removed by hand, or disconnected) is
// reconnected, and the app's route reasserted at its new address.
func TestPlan_DetachedFromNetwork(t *testing.T) {
	a := testApp(t, "v1")
	o := observed(t, "10.0.0.1", running(a, "10.0.0.1", "web", "v1"), proxyC())
	for i := range o.Containers {
		o.Containers[i].Networks = nil
	}
	hp := a.planHost(a.Hosts[0], o)
	got := strings.Join(steps(hp), "\n")
	want := "connect kamal-proxy to the network: the proxy is not on kamal\n" +
		"connect testapp-web-v1 to the network: not on kamal\n" +
		"route web to testapp-web-v1: reconnected to kamal"
	if got != want {
		t.Errorf("steps:\n%s\nwant:\n%s", got, want)
	}
	if k := strings.Join(kinds(hp), ","); k != "network-detached,network-detached" {
		t.Errorf("drift kinds %s", k)
	}
}

// TestComparable: fingerprints say the same spec only under the same key;
// one without a key id (older capstan) or of another key is compared by
// what the container runs.
func TestComparable(t *testing.T) {
	for _, c := range []struct {
		fp, want string
		ok       bool
	}{
		{"aaaa0001.ff", "aaaa0001.ee", true},
		{"aaaa0001.ff", "bbbb0002.ff", false},
		{"ff", "aaaa0001.ff", false},
		{"", "aaaa0001.ff", false},
	} {
		if got := comparable(c.fp, c.want); got != c.ok {
			t.Errorf("comparable(%q, %q) = %v, want %v", c.fp, c.want, got, c.ok)
		}
	}
}
