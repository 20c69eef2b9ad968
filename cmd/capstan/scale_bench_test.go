package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/simfleet"
)

// requireScale skips unless CAPSTAN_SCALE=1: the scale figures take
// minutes of a machine's two cores.
func requireScale(b *testing.B) {
	if os.Getenv("CAPSTAN_SCALE") != "1" {
		b.Skip("CAPSTAN_SCALE=1 runs the scale benchmarks (minutes)")
	}
}

// scaleSizes is CAPSTAN_SCALE_HOSTS ("10,50"), default 10, 50, 200, 500.
func scaleSizes(b *testing.B) []int {
	spec := os.Getenv("CAPSTAN_SCALE_HOSTS")
	if spec == "" {
		return []int{10, 50, 200, 500}
	}
	var out []int
	for _, s := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("CAPSTAN_SCALE_HOSTS=%q: %q is not a host count", spec, s)
		}
		out = append(out, n)
	}
	return out
}

// scaleHeader are the columns of the scale table.
var scaleHeader = []string{"hosts", "pass", "wall", "SSH conns open max", "handshakes max (bound)", "sessions max", "sessions/conn max (bound)", "threads max", "RSS peak", "CPU/host"}

// BenchmarkScale runs `capstan apply` (the binary) against 10 to 500
// simulated hosts with realistic latencies (simfleet.RealisticLatency):
// a first deploy, a no-op pass, and two rolling deploys with boot.limit
// 10% and 25. It reports wall time, what the fleet saw (SSH connections,
// handshakes and sessions at once), and the process's threads, peak RSS
// and CPU per host, as a markdown table (CAPSTAN_BENCH_REPORT appends it
// to a file). It fails when capstan exceeds hostexec's bounds (dials at
// once, OpenSSH's sessions per connection), sends a command the sim does
// not model, or leaves a host unconverged.
func BenchmarkScale(b *testing.B) {
	requireScale(b)
	lat := simfleet.RealisticLatency
	var rows [][]string
	for _, n := range scaleSizes(b) {
		rows = append(rows, scaleFleet(b, n, lat)...)
	}
	benchReport(b, "Scale: `capstan apply` on simulated hosts (`BenchmarkScale`)",
		fmt.Sprintf("The capstan binary against internal/simfleet hosts on loopback (latency: RTT %v, handshake %v, exec %v, create %v, start %v, stop %v, pull %v/MB of a 100 MB image, kamal-proxy switch %v), one web role behind kamal-proxy, x-capstan.bake 0 (as Kamal). "+
			"Passes in order: first deploy (boot.limit 25), no-op, v1→v2 with boot.limit 10%%, v2→v3 with boot.limit 25. "+
			"Bounds: hostexec.DefaultMaxDials handshakes at once, simfleet.MaxSessions (OpenSSH's MaxSessions) sessions per connection. "+
			"RSS peak is the process's VmHWM (rusage maxrss); CPU/host is user+system time over the hosts. Machine: 2 shared cores; the sim runs in the benchmark's process.",
			lat.RTT, lat.Handshake, lat.Exec, lat.Create, lat.Start, lat.Stop, lat.PullPerMB, lat.Switch),
		rows, scaleHeader)
}

// scaleFleet runs the passes on a fleet of n hosts and returns their rows.
func scaleFleet(b *testing.B, n int, lat simfleet.Latency) [][]string {
	f := simfleet.Start(b, simfleet.Options{Hosts: n, Latency: &lat})
	defer f.Close()
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".kamal"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".kamal", "secrets"), []byte("REGISTRY_PASSWORD=$SCALE_REGISTRY_PASSWORD\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	env := []string{"CAPSTAN_KNOWN_HOSTS=" + f.KnownHosts(), "CAPSTAN_IDENTITY=" + f.UserKey(),
		"CAPSTAN_STATE_DIR=" + b.TempDir(), "SCALE_REGISTRY_PASSWORD=" + scaleSecret, "CAPSTAN_INSECURE_REGISTRIES=" + f.Registry()}
	var rows [][]string
	pass := func(name, version, limit string) {
		yml := scaleDeployYML("scaleapp", f, f.Hosts(), version, limit)
		if err := os.WriteFile(filepath.Join(dir, "config", "deploy.yml"), []byte(yml), 0o644); err != nil {
			b.Fatal(err)
		}
		f.ResetStats()
		r := runCapstan(b, dir, env, "apply")
		if r.err != nil {
			b.Fatalf("%d hosts, %s: apply: %v\n%s", n, name, r.err, tail(r.out, 4000))
		}
		st := f.Stats()
		checkScaleBounds(b, n, 1, name, st)
		rows = append(rows, []string{strconv.Itoa(n), name, r.wall.Round(100 * time.Millisecond).String(),
			strconv.FormatInt(st.ConnsMax, 10),
			fmt.Sprintf("%d (%d)", st.HandshakesMax, hostexec.DefaultMaxDials),
			strconv.FormatInt(st.SessionsMax, 10),
			fmt.Sprintf("%d (%d)", st.SessionsPerConnMax, simfleet.MaxSessions),
			strconv.Itoa(r.threadsMax), mib(r.maxRSSKiB),
			fmt.Sprintf("%.1f ms", float64(r.cpu.Microseconds())/1000/float64(n))})
		b.Logf("%d hosts, %s: %v, %d commands: %v", n, name, r.wall.Round(time.Millisecond), totalCommands(st), st.Commands)
	}
	pass("first deploy (limit 25)", "v1", "25")
	pass("no-op", "v1", "25")
	pass("v1→v2 (limit 10%)", "v2", "10%")
	pass("v2→v3 (limit 25)", "v3", "25")
	checkConverged(b, f, "scaleapp-web-v3", "scaleapp-web")
	return rows
}

// checkScaleBounds fails b when a pass broke a bound or sent a command
// the sim does not model. pools is how many hostexec pools ran (one per
// app): each bounds its own dials.
func checkScaleBounds(b *testing.B, n, pools int, pass string, st simfleet.Stats) {
	b.Helper()
	if bound := int64(pools * hostexec.DefaultMaxDials); st.HandshakesMax > bound {
		b.Errorf("%d hosts, %s: %d SSH handshakes at once, over hostexec's bound %d (%d pools)", n, pass, st.HandshakesMax, bound, pools)
	}
	if st.SessionsPerConnMax > simfleet.MaxSessions || st.RefusedSessions > 0 {
		b.Errorf("%d hosts, %s: %d sessions on one connection (%d refused), over OpenSSH's MaxSessions %d", n, pass, st.SessionsPerConnMax, st.RefusedSessions, simfleet.MaxSessions)
	}
	if len(st.Unknown) > 0 {
		b.Errorf("%d hosts, %s: %d commands the sim does not model, e.g. %s", n, pass, len(st.Unknown), st.Unknown[0])
	}
}

// checkConverged fails b unless every host runs container and routes
// route to it.
func checkConverged(b *testing.B, f *simfleet.Fleet, container, route string) {
	b.Helper()
	bad := 0
	for i := range f.Hosts() {
		h := f.Host(i)
		target := strings.Split(h.Routes()[route].Target, ":")[0]
		ok := false
		for _, c := range h.Containers() {
			ok = ok || (c.Name == container && c.State == "running" && target != "" && strings.HasPrefix(c.ID, target))
		}
		if !ok {
			bad++
		}
	}
	if bad > 0 {
		b.Errorf("%d of %d hosts do not run and route %s", bad, len(f.Hosts()), container)
	}
}

func totalCommands(st simfleet.Stats) int64 {
	var n int64
	for _, c := range st.Commands {
		n += c
	}
	return n
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
