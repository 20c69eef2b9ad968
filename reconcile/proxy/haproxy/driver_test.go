package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

func bootWith(t *testing.T, rg *rig, routes ...proxy.Route) {
	t.Helper()
	if err := rg.driver.Boot(context.Background(), "lab1", routes); err != nil {
		t.Fatalf("boot: %v\n%s", err, rg.proc.output())
	}
}

func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDriver_SwitchRefusesUnhealthyTarget(t *testing.T) {
	rg := newRig(t, nil)
	ids := &requestIDs{seen: map[string]int{}}
	v1 := newAppBackend(t, "v1", ids)
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "booting", http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	bootWith(t, rg, rg.route)
	ctx := context.Background()
	if err := rg.driver.Switch(ctx, "lab1", rg.route, proxy.Target{}, v1.target()); err != nil {
		t.Fatal(err)
	}
	route := rg.route
	route.Options.DeployTimeout = 300 * time.Millisecond
	port := sick.Listener.Addr().(*net.TCPAddr).Port
	to := proxy.Target{Container: "app-web-sick", IP: netip.MustParseAddr("127.0.0.1"), Port: port}
	start := time.Now()
	err := rg.driver.Switch(ctx, "lab1", route, v1.target(), to)
	if !errors.Is(err, proxy.ErrUnhealthy) {
		t.Fatalf("err = %v, want ErrUnhealthy", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %s, want about the 300ms deploy timeout", d)
	}
	if got := get(t, rg.url+"/"); got != "v1" {
		t.Errorf("traffic moved to %q", got)
	}
	st, _ := rg.driver.Client("lab1").ServersState(ctx, "app-web")
	if len(st) != 1 || st[0].Server != "app-web-v1" {
		t.Errorf("servers after refused switch: %+v", st)
	}
}

func TestDriver_SwitchWaitsForInFlightRequest(t *testing.T) {
	rg := newRig(t, nil)
	ids := &requestIDs{seen: map[string]int{}}
	v1, v2 := newAppBackend(t, "v1", ids), newAppBackend(t, "v2", ids)
	bootWith(t, rg, rg.route)
	ctx := context.Background()
	if err := rg.driver.Switch(ctx, "lab1", rg.route, proxy.Target{}, v1.target()); err != nil {
		t.Fatal(err)
	}
	slow := make(chan string, 1)
	go func() {
		code, body := getHost(t, rg.url+"/slow?ms=600", "x")
		slow <- fmt.Sprint(code, " ", body)
	}()
	time.Sleep(100 * time.Millisecond) // the slow request is on v1
	start := time.Now()
	if err := rg.driver.Switch(ctx, "lab1", rg.route, v1.target(), v2.target()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if got := <-slow; got != "200 v1" {
		t.Errorf("in-flight request got %q, want 200 from v1", got)
	}
	if took < 400*time.Millisecond {
		t.Errorf("Switch returned after %s, before the in-flight request finished", took)
	}
	if got := get(t, rg.url+"/"); got != "v2" {
		t.Errorf("after switch got %q", got)
	}
}

func TestDriver_SwitchCutsSessionsAfterDrainTimeout(t *testing.T) {
	rg := newRig(t, nil)
	ids := &requestIDs{seen: map[string]int{}}
	v1, v2 := newAppBackend(t, "v1", ids), newAppBackend(t, "v2", ids)
	bootWith(t, rg, rg.route)
	ctx := context.Background()
	if err := rg.driver.Switch(ctx, "lab1", rg.route, proxy.Target{}, v1.target()); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: 10 * time.Second}
		resp, err := client.Get(rg.url + "/slow?ms=8000")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond)
	route := rg.route
	route.Options.DrainTimeout = 300 * time.Millisecond
	start := time.Now()
	if err := rg.driver.Switch(ctx, "lab1", route, v1.target(), v2.target()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Switch took %s with a 300ms drain timeout", took)
	}
	select {
	case err := <-slow:
		if err == nil {
			t.Error("the straggler was not cut")
		}
	case <-time.After(5 * time.Second):
		t.Error("the straggler is still running after shutdown sessions")
	}
	st, _ := rg.driver.Client("lab1").ServersState(ctx, "app-web")
	if len(st) != 1 || st[0].Server != "app-web-v2" {
		t.Errorf("servers = %+v, want only v2", st)
	}
}

func TestDriver_HostRoutingReloadAndRemove(t *testing.T) {
	rg := newRig(t, nil)
	ids := &requestIDs{seen: map[string]int{}}
	web, api := newAppBackend(t, "web1", ids), newAppBackend(t, "api1", ids)
	ctx := context.Background()
	bootWith(t, rg, rg.route)
	if err := rg.driver.Switch(ctx, "lab1", rg.route, proxy.Target{}, web.target()); err != nil {
		t.Fatal(err)
	}
	apiRoute := rg.route
	apiRoute.Role = "api"
	apiRoute.Options.Hosts = []string{"api.example.com"}
	// Boot with one more route: config rewritten with the live web server,
	// reloaded, web keeps serving.
	bootWith(t, rg, rg.route, apiRoute)
	apiTarget := api.target()
	apiTarget.Container = "app-api-1"
	if err := rg.driver.Switch(ctx, "lab1", apiRoute, proxy.Target{}, apiTarget); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{"api.example.com": "api1", "API.example.com:80": "api1", "other.example.com": "web1", "": "web1"} {
		if code, body := getHost(t, rg.url+"/", host); code != 200 || body != want {
			t.Errorf("Host %q: %d %q, want %q", host, code, body, want)
		}
	}
	routes, err := rg.driver.Routes(ctx, "lab1")
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0].Name != "app-api" || routes[0].Hosts[0] != "api.example.com" ||
		routes[0].Targets[0] != apiTarget || routes[1].Name != "app-web" || routes[1].Targets[0] != web.target() {
		t.Errorf("routes = %+v", routes)
	}
	// Booting again with the same routes changes nothing (no reload).
	before := len(rg.host.calls)
	bootWith(t, rg, rg.route, apiRoute)
	for _, c := range rg.host.calls[before:] {
		if c[0] == "docker" && c[1] == "kill" || c[0] == "tee" {
			t.Errorf("idle boot ran %q", c)
		}
	}
	if err := rg.driver.Remove(ctx, "lab1", "app-api"); err != nil {
		t.Fatal(err)
	}
	if code, body := getHost(t, rg.url+"/", "api.example.com"); code != 200 || body != "web1" {
		t.Errorf("after remove: %d %q, want the default backend", code, body)
	}
	if err := rg.driver.Remove(ctx, "lab1", "app-api"); err != nil {
		t.Errorf("removing twice: %v", err)
	}
	cfg, _ := os.ReadFile(rg.s.ConfigPath())
	if strings.Contains(string(cfg), "app-api") {
		t.Errorf("config still has app-api:\n%s", cfg)
	}
}

func TestDriver_ReassertAfterRestartFromStaleConfig(t *testing.T) {
	rg := newRig(t, nil)
	ids := &requestIDs{seen: map[string]int{}}
	v1, v2 := newAppBackend(t, "v1", ids), newAppBackend(t, "v2", ids)
	ctx := context.Background()
	bootWith(t, rg, rg.route)
	if err := rg.driver.Switch(ctx, "lab1", rg.route, proxy.Target{}, v1.target()); err != nil {
		t.Fatal(err)
	}
	stale, err := os.ReadFile(rg.s.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := rg.driver.Switch(ctx, "lab1", rg.route, v1.target(), v2.target()); err != nil {
		t.Fatal(err)
	}
	// Someone restores an old file and restarts haproxy: it routes to v1.
	if err := os.WriteFile(rg.s.ConfigPath(), stale, 0o600); err != nil {
		t.Fatal(err)
	}
	rg.proc.stop()
	if err := rg.proc.start(); err != nil {
		t.Fatal(err)
	}
	if got := get(t, rg.url+"/"); got != "v1" {
		t.Fatalf("stale restart routes to %q", got)
	}
	want := []proxy.Deployment{{Route: rg.route, Target: v2.target()}}
	changed, err := rg.driver.Reassert(ctx, "lab1", want)
	if err != nil || len(changed) != 1 || changed[0] != "app-web" {
		t.Fatalf("changed = %q, err = %v", changed, err)
	}
	if got := get(t, rg.url+"/"); got != "v2" {
		t.Errorf("after reassert got %q", got)
	}
	changed, err = rg.driver.Reassert(ctx, "lab1", want)
	if err != nil || len(changed) != 0 {
		t.Errorf("second reassert: changed = %q, err = %v", changed, err)
	}
}

func TestDriver_RefusesBeforeBootAndUnsupported(t *testing.T) {
	d, err := New(nopHost{}, nopHost{}, Settings{Image: "h:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	route := proxy.Route{Service: "app", Role: "web"}
	to := proxy.Target{Container: "app-web-1", IP: netip.MustParseAddr("172.18.0.5"), Port: 3000}
	if err := d.Switch(ctx, "lab1", route, proxy.Target{}, to); !errors.Is(err, ErrNotBooted) {
		t.Errorf("switch before boot: %v", err)
	}
	if err := d.Remove(ctx, "lab1", "app-web"); !errors.Is(err, ErrNotBooted) {
		t.Errorf("remove before boot: %v", err)
	}
	tls := proxy.Route{Service: "app", Role: "web", Options: proxy.Options{Hosts: []string{"a.com"}, TLS: true}}
	if err := d.Boot(ctx, "lab1", []proxy.Route{tls}); !errors.Is(err, proxy.ErrUnsupported) {
		t.Errorf("TLS: %v", err)
	}
	paths := proxy.Route{Service: "app", Role: "web", Options: proxy.Options{PathPrefixes: []string{"/api"}}}
	if err := d.Boot(ctx, "lab1", []proxy.Route{paths}); !errors.Is(err, proxy.ErrUnsupported) {
		t.Errorf("path prefix: %v", err)
	}
	clash := []proxy.Route{{Service: "a", Role: "web"}, {Service: "b", Role: "web"}}
	if err := d.Boot(ctx, "lab1", clash); !errors.Is(err, proxy.ErrInvalid) {
		t.Errorf("two catch-alls: %v", err)
	}
	noIP := to
	noIP.IP = netip.Addr{}
	if err := d.Switch(ctx, "lab1", route, proxy.Target{}, noIP); !errors.Is(err, proxy.ErrInvalid) {
		t.Errorf("target without IP: %v", err)
	}
}

func TestProbe(t *testing.T) {
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		switch r.URL.Path {
		case "/up":
			if hits < 3 {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
		case "/redirect":
			http.Redirect(w, r, "https://example.com/up", http.StatusMovedPermanently)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	ctx := context.Background()
	if err := Probe(ctx, dial, addr, "/redirect"); !errors.Is(err, proxy.ErrUnhealthy) {
		t.Errorf("redirect: %v", err)
	}
	if err := Probe(ctx, dial, addr, "/missing"); !errors.Is(err, proxy.ErrUnhealthy) {
		t.Errorf("404: %v", err)
	}
	hits = 0
	start := time.Now()
	hc := proxy.HealthCheck{Path: "/up", Interval: 50 * time.Millisecond, Timeout: time.Second}
	if err := WaitHealthy(ctx, dial, addr, hc, 2*time.Second); err != nil {
		t.Fatalf("WaitHealthy: %v", err)
	}
	// Probes at once, after 20 ms, then after 40 ms (doubling up to the
	// interval).
	if hits != 3 || time.Since(start) < 60*time.Millisecond {
		t.Errorf("healthy after %d probes in %s, want the third after 20+40 ms of backoff", hits, time.Since(start))
	}
	refused := func(ctx context.Context) (net.Conn, error) { return nil, errors.New("connection refused") }
	err := WaitHealthy(ctx, refused, addr, hc, 200*time.Millisecond)
	if !errors.Is(err, proxy.ErrUnhealthy) {
		t.Errorf("refused: %v", err)
	}
}
