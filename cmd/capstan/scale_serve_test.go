package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/simfleet"
	"github.com/capstan-dev/capstan/internal/testport"
)

// scaleRepo makes a bare git repository holding apps app01…appN under
// apps/, each a scaleDeployYML on the fleet's hosts, and returns its path.
func scaleRepo(tb testing.TB, f *simfleet.Fleet, apps int) string {
	tb.Helper()
	bare := filepath.Join(tb.TempDir(), "apps.git")
	work := tb.TempDir()
	git := func(dir string, args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), gitEnv()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git(work, "init", "-q", "--bare", "-b", "main", bare)
	git(work, "init", "-q", "-b", "main", ".")
	for i := 1; i <= apps; i++ {
		name := scaleAppName(i)
		dir := filepath.Join(work, "apps", name)
		for file, content := range map[string]string{
			"config/deploy.yml": scaleDeployYML(name, f, f.Hosts(), "v1", "25"),
			".kamal/secrets":    "REGISTRY_PASSWORD=$SCALE_REGISTRY_PASSWORD\n",
		} {
			p := filepath.Join(dir, file)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				tb.Fatal(err)
			}
		}
	}
	git(work, "add", "-A")
	git(work, "commit", "-q", "-m", "50 apps")
	git(work, "push", "-q", bare, "main")
	return bare
}

func scaleAppName(i int) string { return fmt.Sprintf("app%02d", i) }

// scaleServe runs `capstan serve` with apps apps of repo, each polling
// every poll with drift schedule drift, for d; it returns what the fleet
// saw meanwhile (from the daemon's start) and the process's figures.
func scaleServe(b *testing.B, f *simfleet.Fleet, repo string, apps int, poll, drift string, d time.Duration) (simfleet.Stats, time.Time, procRun) {
	b.Helper()
	dir := b.TempDir()
	addr := testport.Addr(b)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen: %s\nstate_dir: %s\nssh: {known_hosts: %s, identity: %s}\nsecrets_env_file: %s\ninsecure_registries: [%s]\napps:\n",
		addr, filepath.Join(dir, "state"), f.KnownHosts(), f.UserKey(), filepath.Join(dir, "secrets.env"), f.Registry())
	for i := 1; i <= apps; i++ {
		fmt.Fprintf(&cfg, "  - {name: %s, repo: %s, branch: main, path: apps/%s, poll: %s, drift_schedule: %q}\n",
			scaleAppName(i), repo, scaleAppName(i), poll, drift)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets.env"), []byte("SCALE_REGISTRY_PASSWORD="+scaleSecret+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "capstan.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	f.ResetStats()
	cmd := exec.Command(capstanBinary(b), "--log-format", "json", "--log-level", "warn", "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	threads, goroutines := make(chan int), make(chan int)
	go func() { threads <- sampleThreads(cmd.Process.Pid, stop) }()
	go func() { goroutines <- sampleGoroutines(addr, stop) }()
	time.Sleep(d)
	hwm := procStatus(cmd.Process.Pid)["VmHWM"]
	// Still alive and serving?
	if resp, err := http.Get("http://" + addr + "/readyz"); err != nil || resp.StatusCode != 200 {
		b.Errorf("capstan serve not ready after %v (%v):\n%s", d, err, tail(logs.String(), 4000))
	} else {
		resp.Body.Close()
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	close(stop)
	r := procRun{out: logs.String(), err: err, wall: time.Since(start), threadsMax: <-threads, goroutinesMax: <-goroutines, maxRSSKiB: hwm,
		cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	return f.Stats(), start, r
}

// sampleGoroutines reads go_goroutines from the daemon's /metrics every
// 200 ms until stop, and returns the most it saw.
func sampleGoroutines(addr string, stop <-chan struct{}) int {
	most := 0
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
					if n, err := strconv.ParseFloat(v, 64); err == nil {
						most = max(most, int(n))
					}
				}
			}
		}
		select {
		case <-stop:
			return most
		case <-t.C:
		}
	}
}

// passStarts returns, per app lock directory, the times its passes
// started: its observations on the lock host (the fleet's first host).
func passStarts(st simfleet.Stats, lockHost string) map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, o := range st.Observations {
		if o.Host == lockHost {
			out[o.LockDir] = append(out[o.LockDir], o.At)
		}
	}
	return out
}

// herdRows buckets pass starts (the first pass of each app excluded: it
// is the startup pass) into interval-long windows centred on start +
// k·interval (where a schedule counted from the daemon's start ticks),
// each cut in ten, and returns one row per window: the counts per tenth,
// the busiest second and the spread of the window's starts.
func herdRows(starts map[string][]time.Time, start time.Time, interval time.Duration, skipFirst bool) [][]string {
	var all []time.Time
	for _, ts := range starts {
		if skipFirst && len(ts) > 0 {
			ts = ts[1:]
		}
		all = append(all, ts...)
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	windows := map[int][]time.Time{}
	for _, t := range all {
		k := int((t.Sub(start) + interval/2) / interval)
		windows[k] = append(windows[k], t)
	}
	var rows [][]string
	for _, k := range sortedInts(windows) {
		ts := windows[k]
		tenths := make([]int, 10)
		perSecond := map[int64]int{}
		for _, t := range ts {
			off := t.Sub(start) - time.Duration(k)*interval + interval/2
			tenths[min(int(off*10/interval), 9)]++
			perSecond[t.Unix()]++
		}
		busiest := 0
		for _, n := range perSecond {
			busiest = max(busiest, n)
		}
		cells := []string{fmt.Sprintf("%v±%v", time.Duration(k)*interval, interval/2), strconv.Itoa(len(ts))}
		for _, n := range tenths {
			cells = append(cells, strconv.Itoa(n))
		}
		cells = append(cells, strconv.Itoa(busiest), ts[len(ts)-1].Sub(ts[0]).Round(10*time.Millisecond).String())
		rows = append(rows, cells)
	}
	return rows
}

func sortedInts[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// BenchmarkScaleServe runs one `capstan serve` with 50 apps on the same
// 10 simulated hosts (RealisticLatency) and reports when their passes
// start: polls (every 10 s, drift sweeps off) then drift sweeps (every
// 10 s, polls off), as histograms of pass starts within each interval
// (a thundering herd shows as one full tenth), with the daemon's threads,
// peak RSS and CPU. It measures; it asserts only that the daemon kept
// serving and the sim saw no command it does not model.
func BenchmarkScaleServe(b *testing.B) {
	requireScale(b)
	apps, hosts := envInt(b, "CAPSTAN_SCALE_APPS", 50), 10
	lat := simfleet.RealisticLatency
	f := simfleet.Start(b, simfleet.Options{Hosts: hosts, Latency: &lat})
	repo := scaleRepo(b, f, apps)
	interval := 10 * time.Second
	head := []string{"window", "passes"}
	for i := 0; i < 10; i++ {
		head = append(head, fmt.Sprintf("%+v", time.Duration(i)*interval/10-interval/2))
	}
	head = append(head, "busiest second", "spread")
	for _, c := range []struct{ what, poll, drift string }{
		{"polls (poll: 10s, drift_schedule: @every 1h)", "10s", "@every 1h"},
		{"drift sweeps (poll: 1h, drift_schedule: @every 10s)", "1h", "@every 10s"},
	} {
		st, start, r := scaleServe(b, f, repo, apps, c.poll, c.drift, 6*interval+interval/2)
		if len(st.Unknown) > 0 {
			b.Errorf("%s: %d commands the sim does not model, e.g. %s", c.what, len(st.Unknown), st.Unknown[0])
		}
		checkScaleBounds(b, hosts, apps, c.what, st)
		starts := passStarts(st, f.Hosts()[0])
		b.Logf("%s: %d observations, %d apps seen on the lock host, commands %v", c.what, len(st.Observations), len(starts), st.Commands)
		if testing.Verbose() {
			b.Logf("daemon log:\n%s", tail(r.out, 8000))
		}
		raced := 0 // log lines of a pass that lost the race to boot kamal-proxy
		for _, l := range strings.Split(r.out, "\n") {
			if strings.Contains(l, "kamal-proxy") && strings.Contains(l, "is already in use") {
				raced++
			}
		}
		routed := 0
		for i := range f.Hosts() {
			routed += len(f.Host(i).Routes())
		}
		rows := herdRows(starts, start, interval, true)
		benchReport(b, fmt.Sprintf("Scale: %d apps × %d hosts in one `capstan serve`, %s (`BenchmarkScaleServe`)", apps, hosts, c.what),
			fmt.Sprintf("Pass starts (each app's observation of its lock host, the startup pass excluded) in %v windows centred on multiples of %v since the daemon started, in tenths of the window (a herd fills one tenth). "+
				"Daemon: %d goroutines and %d threads at most, RSS peak %s, CPU %.1f s over %v. SSH: %d connections open at most, %d handshakes at once at most, %d sessions on one connection at most. "+
				"Routes at the end: %d of %d (apps × hosts); daemon log lines of a pass that lost the race to boot kamal-proxy on a shared host: %d.",
				interval, interval, r.goroutinesMax, r.threadsMax, mib(r.maxRSSKiB), r.cpu.Seconds(), r.wall.Round(time.Second), st.ConnsMax, st.HandshakesMax, st.SessionsPerConnMax, routed, apps*hosts, raced),
			rows, head)
	}
}

// envInt is the number in environment variable name, or def.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}
