package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// benchLoad wires a reconcile.App for the lab app at version. With a nil
// pool it makes one (closed with b); the daemon, too, keeps one pool per app
// across revisions that leave the ssh block and secrets alone.
func benchLoad(b *testing.B, a *e2eApp, version string, pool *hostexec.Pool) (*reconcile.App, *hostexec.Pool) {
	b.Helper()
	key, err := stateKey(&env{getenv: os.Getenv}, a.env["CAPSTAN_STATE_DIR"])
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := kamal.Load(os.DirFS(a.dir), kamal.LoadOptions{FingerprintKey: key, LookupEnv: os.LookupEnv, Version: version})
	if err != nil {
		b.Fatal(err)
	}
	e := &env{stdout: os.Stdout, stderr: os.Stderr, log: benchLogger(b), getenv: os.Getenv, knownHosts: a.l.KnownHosts, identity: a.l.Identity}
	p, red, err := newPool(e, cfg, poolOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if pool == nil {
		pool = p
		b.Cleanup(func() { pool.Close() })
	} else {
		p.Close()
	}
	app, err := newApp(e, cfg, pool, red)
	if err != nil {
		b.Fatal(err)
	}
	return app, pool
}

// benchLogger discards, or with CAPSTAN_BENCH_LOG=FILE appends JSON debug
// lines to FILE (to see where an iteration's time went).
func benchLogger(b *testing.B) *slog.Logger {
	path := os.Getenv("CAPSTAN_BENCH_LOG")
	if path == "" {
		return discardLogger()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// benchLab applies the lab app at v1 and points the environment at it.
func benchLab(b *testing.B) *e2eApp {
	a := newE2EApp(b, 3)
	a.mustApply() // also puts a.env in the environment
	return a
}

func poolCommands(p *hostexec.Pool) int64 {
	var n int64
	for _, s := range p.Stats() {
		n += int64(s.Commands)
	}
	return n
}

// BenchmarkE2EPlanNoop: a no-op plan of the 3 lab hosts on warm
// connections (goal: under 150 ms, one round trip per host).
func BenchmarkE2EPlanNoop(b *testing.B) {
	a := benchLab(b)
	app, pool := benchLoad(b, a, "v1", nil)
	ctx := context.Background()
	if p, err := app.Plan(ctx); err != nil || !p.Empty() {
		b.Fatalf("warm-up plan is not empty (%v)", err)
	}
	before := poolCommands(pool)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := app.Plan(ctx)
		if err != nil || !p.Empty() {
			b.Fatalf("plan: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(poolCommands(pool)-before)/float64(b.N)/3, "cmds/host")
}

// BenchmarkE2EApplySwitch deploys v2, v1, v2… on the 3 lab hosts (no load)
// the way the daemon does (one SSH pool for every revision, a new App per
// revision, plan then apply) and reports medians: when the last web host
// switched after the plan started, the whole plan and apply, and the
// phases of a role deploy. Both images are on the hosts already; see
// BenchmarkE2EApplyNewImage for a deploy that pulls.
func BenchmarkE2EApplySwitch(b *testing.B) {
	a := benchLab(b)
	benchApply(b, a, func(i int) string {
		if i%2 == 0 {
			return "v2"
		}
		return "v1"
	})
}

// BenchmarkE2EApplyNewImage deploys, each iteration, a version no host has
// seen: the testapp image with one more layer holding a unique file,
// pushed to the lab registry before the timer runs. Every host pulls it.
func BenchmarkE2EApplyNewImage(b *testing.B) {
	a := benchLab(b)
	ctx := context.Background()
	tags := make([]string, b.N)
	for i := range tags {
		tags[i] = fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		if err := a.l.PushUniqueTestapp(ctx, tags[i]); err != nil {
			b.Fatal(err)
		}
	}
	benchApply(b, a, func(i int) string { return tags[i] })
}

// BenchmarkE2EApplySwitchKamalProxy is BenchmarkE2EApplySwitch with the
// default driver, kamal-proxy (the lab's stand-in, which health-checks a
// new target at once and then every interval, as kamal-proxy does), and
// reports the floor measured in the same run: a bare `docker run` of the
// image on the kamal network until /up answers, on a web host.
func BenchmarkE2EApplySwitchKamalProxy(b *testing.B) {
	a := newE2EApp(b, 3)
	a.configure("v1", "", "")
	a.editConfig("  proxy: haproxy\n  haproxy:\n    image: 10.231.0.1:5000/haproxy:lab\n", "",
		"proxy:\n  app_port: 3000\n", "proxy:\n  app_port: 3000\n  run:\n    registry: 10.231.0.1:5000\n    repository: basecamp/kamal-proxy\n    version: v0.9.2\n")
	a.mustApply()
	ld := startLoad(webAddrs)
	switched := benchApply(b, a, func(i int) string {
		if i%2 == 0 {
			return "v2"
		}
		return "v1"
	})
	floor := floorRun(b, a.l, 0, a.l.RegistryAddr+"/testapp:v2")
	fleet := floorFleet(b, a.l, []int{0, 1, 2}, a.l.RegistryAddr+"/testapp:v2")
	ld.finish(b, fmt.Sprintf("%d deploys through kamal-proxy", b.N))
	b.ReportMetric(float64(floor.Milliseconds()), "ms-floor")
	b.ReportMetric(float64(fleet.Milliseconds()), "ms-floor-3-hosts")
	if b.N < 3 {
		return // the testing package's first, single-iteration run
	}
	benchReport(b, "The kamal-proxy driver: plan start → all web hosts switched (`BenchmarkE2EApplySwitchKamalProxy`)",
		fmt.Sprintf("`capstan apply` as the daemon runs it (warm SSH pool, plan then apply), v1↔v2 with both images on the hosts, the lab's kamal-proxy stand-in, under traffic through both web hosts (%d requests during the %d deploys and the floors, %d failed); median of %d. "+
			"Floor: a bare `docker run -d` of v2 on the `kamal` network until `/up` answers, on a web host, in the same run (median of 3). "+
			"The deploy boots a container on each of the 3 hosts at once, and the lab's hosts share this machine's 2 cores: the second floor starts the same bare `docker run` on the 3 hosts together, until the last `/up` answers.", ld.sent.Load(), b.N, ld.failed.Load(), b.N),
		[][]string{
			{"all web hosts switched", switched.Round(time.Millisecond).String(), fmt.Sprintf("%.2f×", switched.Seconds()/floor.Seconds()), fmt.Sprintf("%.2f×", switched.Seconds()/fleet.Seconds())},
			{"floor: one host", floor.Round(time.Millisecond).String(), "", ""},
			{"floor: the 3 hosts at once", fleet.Round(time.Millisecond).String(), "", ""},
		}, []string{"", "time", "vs one host's floor", "vs the 3 hosts' floor"})
}

// benchApply runs the deploys and reports medians; it returns the median
// time until the last web host switched.
func benchApply(b *testing.B, a *e2eApp, version func(i int) string) time.Duration {
	ctx := context.Background()
	prev, pool := benchLoad(b, a, "v1", nil)
	if _, err := prev.Plan(ctx); err != nil { // learns the hosts, as the daemon's earlier passes did
		b.Fatal(err)
	}
	phases := map[string][]time.Duration{}
	var switched, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		app, _ := benchLoad(b, a, version(i), pool)
		app.Inherit(prev) // as the daemon does
		prev = app
		b.StartTimer()
		start := time.Now()
		p, err := app.Plan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		res, err := app.Apply(ctx, p)
		if err != nil {
			b.Fatal(err)
		}
		total = append(total, time.Since(start))
		for _, h := range res.Hosts {
			for _, s := range h.Steps {
				switch s.Kind {
				case reconcile.StepPull:
					phases["pull"] = append(phases["pull"], s.End.Sub(s.Start))
				case reconcile.StepDeploy:
					for k, d := range s.Phases {
						phases[s.Role+"-"+k] = append(phases[s.Role+"-"+k], d)
					}
				}
			}
		}
		switched = append(switched, lastSwitch(res).Sub(start))
	}
	b.StopTimer()
	msf := func(d time.Duration) float64 { return float64(d.Milliseconds()) }
	b.ReportMetric(msf(median(switched)), "ms-web-switched")
	b.ReportMetric(msf(median(total)), "ms-apply")
	for k, d := range phases {
		b.ReportMetric(msf(median(d)), "ms-"+k)
	}
	return median(switched)
}

// lastSwitch is when the last web host of res switched to its new
// container (zero when none did).
func lastSwitch(res *reconcile.Result) time.Time {
	var last time.Time
	for _, h := range res.Hosts {
		for _, s := range h.Steps {
			if s.Kind == reconcile.StepDeploy && s.Role == "web" && s.Switched.After(last) {
				last = s.Switched
			}
		}
	}
	return last
}
