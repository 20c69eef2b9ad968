package kamalproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// step is one scripted command: the argv the driver must send (prefix
// match when prefix is set) and what the host answers.
type step struct {
	argv   []string
	prefix bool
	out    string
	err    error
}

// script is a fake proxy.Runner that plays steps in order and fails the test
// on any unexpected command.
type script struct {
	t     *testing.T
	steps []step
	calls [][]string
}

func (s *script) Run(_ context.Context, host string, argv []string, _ io.Reader) ([]byte, error) {
	s.t.Helper()
	s.calls = append(s.calls, argv)
	if host != "10.0.0.1" {
		s.t.Errorf("host = %q", host)
	}
	if len(s.steps) == 0 {
		s.t.Fatalf("unexpected command %q", argv)
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	ok := slices.Equal(argv, st.argv)
	if st.prefix {
		ok = len(argv) >= len(st.argv) && slices.Equal(argv[:len(st.argv)], st.argv)
	}
	if !ok {
		s.t.Fatalf("command %q, want %q", argv, st.argv)
	}
	return []byte(st.out), st.err
}

func (s *script) done() {
	s.t.Helper()
	if len(s.steps) > 0 {
		s.t.Errorf("%d scripted commands not run, next %q", len(s.steps), s.steps[0].argv)
	}
}

// exitError mimics hostexec's error for a failed remote command: the
// message carries stderr.
type exitError struct{ stderr string }

func (e *exitError) Error() string { return "exit status 1: " + e.stderr }

// colour wraps every cell like kamal-proxy's Table.Print does.
func colour(rows [][]string) string {
	widths := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	var b strings.Builder
	for n, r := range rows {
		for i, c := range r {
			style := ""
			if n == 0 {
				style = "3;94"
			} else if i == 0 {
				style = "1;34"
			}
			fmt.Fprintf(&b, "\x1b[%sm%s\x1b[0m%s  ", style, c, strings.Repeat(" ", widths[i]-len(c)))
		}
		b.WriteString("\n")
	}
	return b.String()
}

var header = []string{"Service", "Host", "Path", "Target", "State", "TLS"}

func TestParseList_Transcript(t *testing.T) {
	out, err := os.ReadFile("testdata/list_transcript.txt")
	if err != nil {
		t.Fatal(err)
	}
	routes, err := ParseList(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 {
		t.Fatalf("routes = %+v", routes)
	}
	r := routes[0]
	if r.Name != "testapp-web" || r.Hosts != nil || !slices.Equal(r.PathPrefixes, []string{"/"}) ||
		len(r.Targets) != 1 || r.Targets[0] != (proxy.Target{Container: "b297a02470b3", Port: 3000}) ||
		r.State != "running" || r.TLS {
		t.Errorf("route = %+v", r)
	}
}

func TestParseList_ColouredAndMultiValued(t *testing.T) {
	out := colour([][]string{header,
		{"shop-web-production", "shop.example.com,www.shop.example.com", "/", "0c95a080732f:3000", "running", "yes"},
		{"blog-web", "*", "/blog,/feed", "ee2b0e8dc9b7:80,e32501cf6556:80", "paused", "no"},
		{"api-web", "api.example.com", "/", "bb3c6b5ed0b7", "stopped", "no"},
	})
	routes, err := ParseList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, r := range routes {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"api-web", "blog-web", "shop-web-production"}) {
		t.Fatalf("names = %q", names)
	}
	if got := routes[0].Targets; len(got) != 1 || got[0].Port != 80 {
		t.Errorf("api-web targets = %+v, want default port 80", got)
	}
	if got := routes[1]; got.Hosts != nil || len(got.Targets) != 2 || got.State != "paused" || !slices.Equal(got.PathPrefixes, []string{"/blog", "/feed"}) {
		t.Errorf("blog-web = %+v", got)
	}
	if got := routes[2]; !got.TLS || !slices.Equal(got.Hosts, []string{"shop.example.com", "www.shop.example.com"}) {
		t.Errorf("shop = %+v", got)
	}
}

func TestParseList_Empty(t *testing.T) {
	routes, err := ParseList([]byte(colour([][]string{header})))
	if err != nil || len(routes) != 0 {
		t.Fatalf("routes = %+v, err = %v", routes, err)
	}
}

func TestParseList_Garbage(t *testing.T) {
	for name, out := range map[string]string{
		"nothing":     "",
		"error":       "Error: dial unix /tmp/kamal-proxy.sock: connect: no such file or directory\n",
		"bad port":    colour([][]string{header, {"app-web", "*", "/", "abc:http", "running", "no"}}),
		"bad service": colour([][]string{header, {"app web", "*", "/", "abc:80", "running", "no"}}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseList([]byte(out)); !errors.Is(err, proxy.ErrParse) {
				t.Fatalf("err = %v, want ErrParse", err)
			}
		})
	}
}

func deployment(service, container string, hosts ...string) proxy.Deployment {
	return proxy.Deployment{
		Route:  proxy.Route{Service: service, Role: "web", Options: proxy.Options{Hosts: hosts}},
		Target: proxy.Target{Container: container, Port: 3000},
	}
}

func TestStale(t *testing.T) {
	live := []proxy.LiveRoute{
		{Name: "ok-web", Hosts: []string{"b.com", "a.com"}, PathPrefixes: []string{"/"}, Targets: []proxy.Target{{Container: "0c95a080732f", Port: 3000}}},
		{Name: "moved-web", Targets: []proxy.Target{{Container: "aaaaaaaaaaaa", Port: 3000}}},
		{Name: "hosts-web", Hosts: []string{"old.com"}, Targets: []proxy.Target{{Container: "bbbbbbbbbbbb", Port: 3000}}},
		{Name: "paused-web", State: "paused", Targets: []proxy.Target{{Container: "cccccccccccc", Port: 3000}}},
	}
	want := []proxy.Deployment{
		// Full ID against the short ID the proxy lists: same container.
		deployment("ok", "0c95a080732f7a5c2b7d4e1e0b9b1a2f3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f", "a.com", "b.com"),
		deployment("moved", "dddddddddddd"),
		deployment("hosts", "bbbbbbbbbbbb", "new.com"),
		deployment("paused", "cccccccccccc"),
		deployment("missing", "eeeeeeeeeeee"),
	}
	var got []string
	for _, d := range Stale(live, want) {
		got = append(got, d.Route.Name())
	}
	if !slices.Equal(got, []string{"moved-web", "hosts-web", "missing-web"}) {
		t.Errorf("stale = %q", got)
	}
}

func TestDriver_ReassertAfterRestartWithNoRoutes(t *testing.T) {
	want := []proxy.Deployment{deployment("shop", "0c95a080732f", "shop.example.com"), deployment("blog", "ee2b0e8dc9b7")}
	shop, _ := DeployArgs(Settings{}, want[0].Route, want[0].Target)
	blog, _ := DeployArgs(Settings{}, want[1].Route, want[1].Target)
	r := &script{t: t, steps: []step{
		{argv: ListArgs(Settings{}), out: colour([][]string{header})}, // came back empty
		{argv: shop},
		{argv: blog, err: &exitError{"Error: target failed to become healthy within configured timeout (30s)"}},
	}}
	d, err := New(r, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := d.Reassert(context.Background(), "10.0.0.1", want)
	if !errors.Is(err, proxy.ErrUnhealthy) {
		t.Errorf("err = %v, want ErrUnhealthy for blog", err)
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		t.Errorf("err = %v, want the runner's error kept", err)
	}
	if !slices.Equal(changed, []string{"shop-web"}) {
		t.Errorf("changed = %q", changed)
	}
	r.done()
}

func TestDriver_ReassertNothingToDo(t *testing.T) {
	want := []proxy.Deployment{deployment("shop", "0c95a080732f")}
	r := &script{t: t, steps: []step{
		{argv: ListArgs(Settings{}), out: colour([][]string{header, {"shop-web", "*", "/", "0c95a080732f:3000", "running", "no"}})},
	}}
	d, _ := New(r, Settings{})
	changed, err := d.Reassert(context.Background(), "10.0.0.1", want)
	if err != nil || len(changed) != 0 {
		t.Fatalf("changed = %q, err = %v", changed, err)
	}
	r.done()
}

func TestDriver_BootStartsOrRuns(t *testing.T) {
	s := transcriptSettings
	r := &script{t: t, steps: []step{
		{argv: StateArgs(s), err: &exitError{"Error: No such object: kamal-proxy"}},
		{argv: NetworkArgs(s), err: &exitError{"Error response from daemon: network with name kamal already exists"}},
		{argv: MkdirArgs(s)},
		{argv: StartArgs(s), err: &exitError{"Error response from daemon: No such container: kamal-proxy"}},
		{argv: RunArgs(s), out: "d0c0ffee\n"},
	}}
	d, err := New(r, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Boot(context.Background(), "10.0.0.1", []proxy.Route{transcriptRoute}); err != nil {
		t.Fatal(err)
	}
	r.done()
}

// Two apps booting the proxy of one fresh host at once: the one whose
// docker run lost the name race finds the other's proxy running.
func TestDriver_BootLosesTheNameRace(t *testing.T) {
	s := transcriptSettings
	r := &script{t: t, steps: []step{
		{argv: StateArgs(s), err: &exitError{"Error: No such object: kamal-proxy"}},
		{argv: NetworkArgs(s)},
		{argv: MkdirArgs(s)},
		{argv: StartArgs(s), err: &exitError{"Error response from daemon: No such container: kamal-proxy"}},
		{argv: RunArgs(s), err: &exitError{`docker: Error response from daemon: Conflict. The container name "/kamal-proxy" is already in use by container "d0c0ffee".`}},
		{argv: StateArgs(s), out: "true basecamp/kamal-proxy:v0.9.2\n"},
	}}
	d, _ := New(r, s)
	if err := d.Boot(context.Background(), "10.0.0.1", []proxy.Route{transcriptRoute}); err != nil {
		t.Fatal(err)
	}
	r.done()
}

func TestDriver_BootRefusesOldProxy(t *testing.T) {
	r := &script{t: t, steps: []step{
		{argv: StateArgs(Settings{}), out: "true basecamp/kamal-proxy:v0.8.4\n"},
	}}
	d, _ := New(r, Settings{})
	if err := d.Boot(context.Background(), "10.0.0.1", nil); !errors.Is(err, proxy.ErrProxyVersion) {
		t.Fatalf("err = %v, want ErrProxyVersion", err)
	}
	r.done()
}

// A running proxy of a good version costs one command: every deploy after
// the first boots it this way, on the deploy's critical path.
func TestDriver_BootRunningProxy(t *testing.T) {
	r := &script{t: t, steps: []step{
		{argv: StateArgs(Settings{}), out: "true basecamp/kamal-proxy:v0.9.2\n"},
	}}
	d, _ := New(r, Settings{})
	if err := d.Boot(context.Background(), "10.0.0.1", nil); err != nil {
		t.Fatal(err)
	}
	r.done()
}

func TestDriver_BootStoppedProxy(t *testing.T) {
	r := &script{t: t, steps: []step{
		{argv: StateArgs(Settings{}), out: "false basecamp/kamal-proxy:v0.9.2\n"},
		{argv: NetworkArgs(Settings{}), err: &exitError{"Error response from daemon: network with name kamal already exists"}},
		{argv: MkdirArgs(Settings{})},
		{argv: StartArgs(Settings{}), out: "kamal-proxy\n"},
	}}
	d, _ := New(r, Settings{})
	if err := d.Boot(context.Background(), "10.0.0.1", nil); err != nil {
		t.Fatal(err)
	}
	r.done()
}

func TestDriver_SwitchUnhealthy(t *testing.T) {
	to := proxy.Target{Container: "2a271781744a", Port: 3000}
	argv, _ := DeployArgs(Settings{}, transcriptRoute, to)
	r := &script{t: t, steps: []step{
		{argv: argv, err: &exitError{"Error: target failed to become healthy within configured timeout (30s)"}},
	}}
	d, _ := New(r, Settings{})
	err := d.Switch(context.Background(), "10.0.0.1", transcriptRoute, proxy.Target{}, to)
	if !errors.Is(err, proxy.ErrUnhealthy) {
		t.Fatalf("err = %v, want ErrUnhealthy", err)
	}
	r.done()
}

func TestDriver_SwitchInvalidSendsNothing(t *testing.T) {
	r := &script{t: t}
	d, _ := New(r, Settings{})
	err := d.Switch(context.Background(), "10.0.0.1", transcriptRoute, proxy.Target{}, proxy.Target{Container: "x;rm -rf /", Port: 80})
	if !errors.Is(err, proxy.ErrInvalid) || len(r.calls) != 0 {
		t.Fatalf("err = %v, calls = %q", err, r.calls)
	}
}

func TestDriver_RemoveOnlyListed(t *testing.T) {
	listed := colour([][]string{header, {"shop-web", "*", "/", "0c95a080732f:3000", "running", "no"}})
	r := &script{t: t, steps: []step{
		{argv: ListArgs(Settings{}), out: listed},
		{argv: ListArgs(Settings{}), out: listed},
		{argv: RemoveArgs(Settings{}, "shop-web")},
	}}
	d, _ := New(r, Settings{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Remove(ctx, "10.0.0.1", "gone-web"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, "10.0.0.1", "shop-web"); err != nil {
		t.Fatal(err)
	}
	r.done()
}
