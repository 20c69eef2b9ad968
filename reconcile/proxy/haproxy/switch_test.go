package haproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// appBackend is a real HTTP backend standing in for one app container.
type appBackend struct {
	name string
	srv  *httptest.Server
	port int
}

// requestIDs counts every X-Req-ID any backend saw, to catch requests that
// reached a backend twice (a hidden retry).
type requestIDs struct {
	mu   sync.Mutex
	seen map[string]int
}

func (r *requestIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[id]++
}

func (r *requestIDs) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.seen {
		if c > 1 {
			n++
		}
	}
	return n
}

func newAppBackend(t *testing.T, name string, ids *requestIDs) *appBackend {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /up", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		ids.add(r.Header.Get("X-Req-ID"))
		io.WriteString(w, name)
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			io.WriteString(w, name)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("POST /post", func(w http.ResponseWriter, r *http.Request) {
		ids.add(r.Header.Get("X-Req-ID"))
		sum := sha256.New()
		if _, err := io.Copy(sum, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %x", name, sum.Sum(nil))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &appBackend{name: name, srv: srv, port: srv.Listener.Addr().(*net.TCPAddr).Port}
}

func (b *appBackend) target() proxy.Target {
	return proxy.Target{Container: "app-web-" + b.name, IP: netip.MustParseAddr("127.0.0.1"), Port: b.port}
}

// rig is one "host": a real haproxy booted by the driver through localHost.
type rig struct {
	driver *Driver
	proc   *haproxyProc
	host   *localHost
	s      Settings
	url    string
	route  proxy.Route
}

func newRig(t *testing.T, logger *slog.Logger) *rig {
	t.Helper()
	bin := haproxyBin(t)
	dir := t.TempDir()
	s := Settings{
		Image:     "haproxy:test",
		ConfigDir: filepath.Join(dir, "cfg"),
		SocketDir: filepath.Join(dir, "sock"),
		Logger:    logger,
	}
	port := freePort(t)
	s.Config = Config{Socket: s.SocketPath(), Bind: "127.0.0.1:" + strconv.Itoa(port)}
	proc := &haproxyProc{t: t, bin: bin, cfg: s.ConfigPath(), socket: s.SocketPath(), logf: filepath.Join(dir, "haproxy.log")}
	t.Cleanup(proc.stop)
	host := &localHost{t: t, h: proc, socket: s.SocketPath()}
	d, err := New(host, host, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client("lab1").Close() })
	route := proxy.Route{Service: "app", Role: "web", Options: proxy.Options{
		HealthCheck:  proxy.HealthCheck{Path: "/up", Interval: 50 * time.Millisecond, Timeout: time.Second},
		DrainTimeout: 5 * time.Second, DeployTimeout: 5 * time.Second,
	}}
	return &rig{driver: d, proc: proc, host: host, s: s, url: "http://127.0.0.1:" + strconv.Itoa(port), route: route}
}

// result is one request of the load generator.
type result struct {
	kind       string
	start, end time.Time
	backend    string
	err        error
	retried    bool // the client sent it on more than one connection
}

// loadGen sends keep-alive GETs, new-connection GETs and POSTs with bodies
// in a closed loop, never retrying on purpose, and records every outcome.
type loadGen struct {
	base    string
	mu      sync.Mutex
	results []result
	seq     atomic.Int64
}

func (g *loadGen) run(ctx context.Context, wg *sync.WaitGroup) {
	keepAlive := &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}
	newConn := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	workers := []struct {
		kind string
		tr   *http.Transport
	}{
		{"keepalive-get", keepAlive}, {"keepalive-get", keepAlive},
		{"newconn-get", newConn}, {"newconn-get", newConn},
		{"post", keepAlive}, {"post", keepAlive},
	}
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: w.tr, Timeout: 10 * time.Second}
			for ctx.Err() == nil {
				g.record(g.one(client, w.kind))
			}
		}()
	}
}

func (g *loadGen) record(r result) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.results = append(g.results, r)
}

func (g *loadGen) one(client *http.Client, kind string) result {
	id := strconv.FormatInt(g.seq.Add(1), 10)
	var body []byte
	method, url := http.MethodGet, g.base+"/"
	if kind == "post" {
		body = make([]byte, 1024+int(g.seq.Load()%32)*1024)
		rand.Read(body)
		method, url = http.MethodPost, g.base+"/post"
	}
	conns := 0
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns++ }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, url, bytes.NewReader(body))
	req.Header.Set("X-Req-ID", id)
	if kind == "post" {
		req.GetBody = nil // a body that cannot be replayed: no transparent retry
	}
	r := result{kind: kind, start: time.Now()}
	resp, err := client.Do(req)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("status %s: %q", resp.Status, b)
		case kind == "post":
			sum := sha256.Sum256(body)
			name, got, _ := strings.Cut(string(b), " ")
			if got != hex.EncodeToString(sum[:]) {
				err = fmt.Errorf("POST body damaged: %q", b)
			}
			r.backend = name
		default:
			r.backend = string(b)
		}
	}
	r.end, r.err, r.retried = time.Now(), err, conns > 1
	return r
}

type switchEvent struct {
	begin, end time.Time
	from, to   string
}

// TestDriver_SwitchUnderLoad switches a real haproxy between two real
// backends 20 times under mixed load and requires zero failed requests,
// zero client retries, and no response from the old backend once a switch
// has returned. Then it restarts haproxy from the rendered file and checks
// it routes to the live server.
func TestDriver_SwitchUnderLoad(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))
	rg := newRig(t, logger)
	ids := &requestIDs{seen: map[string]int{}}
	v1, v2 := newAppBackend(t, "v1", ids), newAppBackend(t, "v2", ids)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if err := rg.driver.Boot(ctx, "lab1", []proxy.Route{rg.route}); err != nil {
		t.Fatalf("boot: %v\n%s", err, rg.proc.output())
	}
	if err := rg.driver.Switch(ctx, "lab1", rg.route, proxy.Target{}, v1.target()); err != nil {
		t.Fatalf("first switch: %v", err)
	}
	if got := get(t, rg.url+"/"); got != "v1" {
		t.Fatalf("after first switch got %q", got)
	}

	// CAPSTAN_SWITCHES and CAPSTAN_SWITCH_GAP (a duration) scale the run
	// for measurements; the defaults keep it at about 4 s.
	switches, gap := 20, 150*time.Millisecond
	if s := os.Getenv("CAPSTAN_SWITCHES"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 1000 {
			switches = n
		}
	}
	if s := os.Getenv("CAPSTAN_SWITCH_GAP"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d >= 0 && d <= 10*time.Second {
			gap = d
		}
	}
	gen := &loadGen{base: rg.url}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	gen.run(loadCtx, &wg)
	var events []switchEvent
	var durations []time.Duration
	cur, next := v1, v2
	for i := 0; i < switches; i++ {
		time.Sleep(gap)
		ev := switchEvent{begin: time.Now(), from: cur.name, to: next.name}
		if err := rg.driver.Switch(ctx, "lab1", rg.route, cur.target(), next.target()); err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("switch %d to %s: %v", i, next.name, err)
		}
		ev.end = time.Now()
		events = append(events, ev)
		durations = append(durations, ev.end.Sub(ev.begin))
		cur, next = next, cur
	}
	time.Sleep(150 * time.Millisecond)
	stopLoad()
	wg.Wait()

	// Tally.
	byKind := map[string]int{}
	failed, retried, checked, violations := 0, 0, 0, 0
	for _, r := range gen.results {
		byKind[r.kind]++
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			failed++
			if failed <= 5 {
				t.Errorf("%s failed at %s: %v", r.kind, r.start.Format("15:04:05.000"), r.err)
			}
		}
		if r.retried {
			retried++
			t.Errorf("%s was sent on more than one connection (client retry)", r.kind)
		}
		// A request that started after a switch returned and ended before
		// the next one began must not come from the old backend.
		i := sort(events, r.start)
		if i < 0 || r.err != nil {
			continue
		}
		if i+1 < len(events) && r.end.After(events[i+1].begin) {
			continue
		}
		checked++
		if r.backend != events[i].to {
			violations++
			if violations <= 5 {
				t.Errorf("request started %s after switch %d to %s returned, answered by %s",
					r.start.Sub(events[i].end), i, events[i].to, r.backend)
			}
		}
	}
	if d := ids.duplicates(); d != 0 {
		t.Errorf("%d requests reached a backend twice", d)
	}
	total := len(gen.results)
	slices.Sort(durations)
	t.Logf("%d switches: %d requests (%v), %d failed, %d client retries, %d duplicate deliveries; %d checked after a switch, %d from the old backend",
		switches, total, byKind, failed, retried, ids.duplicates(), checked, violations)
	t.Logf("Switch() duration: min %s, median %s, max %s (health probe + runtime switch + config write + drain + del)",
		durations[0], durations[len(durations)/2], durations[len(durations)-1])
	logMu.Lock()
	t.Logf("runtime switch (set ready + set maint): %s", switchTimes(logs.String()))
	logMu.Unlock()
	if total < 200 || checked < 100 {
		t.Errorf("load too thin to prove anything: %d requests, %d checked", total, checked)
	}
	if failed != 0 || violations != 0 {
		t.Fatalf("%d failed, %d answered by the old backend", failed, violations)
	}

	// The rendered file carries the live server: restart and check.
	live := cur
	cfg, err := os.ReadFile(rg.s.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte("server app-web-"+live.name+" 127.0.0.1:"+strconv.Itoa(live.port)+" pool-max-conn -1")) {
		t.Fatalf("config does not list the live server %s:\n%s", live.name, cfg)
	}
	rg.proc.stop()
	if err := rg.proc.start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if got := get(t, rg.url+"/"); got != live.name {
			t.Fatalf("after restart got %q, want %q", got, live.name)
		}
	}
	routes, err := rg.driver.Routes(ctx, "lab1")
	if err != nil {
		t.Fatal(err)
	}
	want := []proxy.LiveRoute{{Name: "app-web", State: "running", Targets: []proxy.Target{live.target()}}}
	if fmt.Sprint(routes) != fmt.Sprint(want) {
		t.Errorf("routes after restart = %+v, want %+v", routes, want)
	}
}

// sort returns the index of the last event that ended at or before t, or -1.
func sort(events []switchEvent, t time.Time) int {
	i := -1
	for j, e := range events {
		if !e.end.After(t) {
			i = j
		}
	}
	return i
}

func switchTimes(logs string) string {
	var ds []time.Duration
	for _, l := range strings.Split(logs, "\n") {
		_, rest, ok := strings.Cut(l, " switch=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, " ")
		if d, err := time.ParseDuration(v); err == nil {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return "none logged"
	}
	slices.Sort(ds)
	return fmt.Sprintf("n=%d min %s, median %s, max %s", len(ds), ds[0], ds[len(ds)/2], ds[len(ds)-1])
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func get(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %q", url, resp.Status, b)
	}
	return string(b)
}
