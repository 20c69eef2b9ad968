package main

import (
	"context"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// benchLoad wires a reconcile.App for the lab app at version on a new pool.
func benchLoad(b *testing.B, a *e2eApp, version string) (*reconcile.App, *hostexec.Pool) {
	b.Helper()
	key, err := stateKey(&env{getenv: os.Getenv}, a.env["CAPSTAN_STATE_DIR"])
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := kamal.Load(os.DirFS(a.dir), kamal.LoadOptions{FingerprintKey: key, LookupEnv: os.LookupEnv, Version: version})
	if err != nil {
		b.Fatal(err)
	}
	e := &env{stdout: os.Stdout, stderr: os.Stderr, log: discardLogger(), getenv: os.Getenv, knownHosts: a.l.KnownHosts, identity: a.l.Identity}
	pool, red, err := newPool(e, cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pool.Close() })
	app, err := newApp(e, cfg, pool, red)
	if err != nil {
		b.Fatal(err)
	}
	return app, pool
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
	app, pool := benchLoad(b, a, "v1")
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
// and reports medians: when the last web host switched after apply
// started, the whole apply, and the phases of a role deploy.
func BenchmarkE2EApplySwitch(b *testing.B) {
	a := benchLab(b)
	ctx := context.Background()
	var switched, total, pull, boot, health, stop []time.Duration
	for i := 0; i < b.N; i++ {
		version := "v1"
		if i%2 == 0 {
			version = "v2"
		}
		b.StopTimer()
		app, _ := benchLoad(b, a, version)
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
		var last time.Time
		for _, h := range res.Hosts {
			for _, s := range h.Steps {
				switch s.Kind {
				case reconcile.StepPull:
					pull = append(pull, s.End.Sub(s.Start))
				case reconcile.StepDeploy:
					boot = append(boot, s.Phases["boot"])
					health = append(health, s.Phases["healthy+switch"])
					stop = append(stop, s.Phases["stop"])
					if s.Role == "web" {
						if sw := s.Start.Add(s.Phases["boot"] + s.Phases["healthy+switch"]); sw.After(last) {
							last = sw
						}
					}
				}
			}
		}
		switched = append(switched, last.Sub(start))
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		if len(d) == 0 {
			return 0
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)/2].Milliseconds())
	}
	b.ReportMetric(med(switched), "ms-web-switched")
	b.ReportMetric(med(total), "ms-apply")
	b.ReportMetric(med(pull), "ms-pull")
	b.ReportMetric(med(boot), "ms-boot")
	b.ReportMetric(med(health), "ms-healthy+switch")
	b.ReportMetric(med(stop), "ms-stop")
}
