package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostScale is one fleet size of BenchmarkE2EHostScaling.
type hostScale struct {
	hosts                  int
	noopWall, noopCPU      time.Duration // per pass; CPU is this process's (user+system)
	noopCmds               float64       // round trips (SSH commands, Docker API calls) per host per pass
	deployWall, deploySwit time.Duration // medians: whole plan+apply, last host switched
	deployCmds             float64
}

// BenchmarkE2EHostScaling measures the cost per host of a no-op pass and
// of a deploy on 1, 2, 4 and 8 lab hosts (web role on each, HAProxy
// driver, both images present): the wall time, the SSH round trips per
// host and capstan's own CPU time per host. It grows the shared lab to 8
// hosts, so .ci/bench runs it last and puts the lab back as it was.
//
// A no-op pass's cost per host must stay flat: its CPU time per host on 8
// hosts within 1.5× of that on 1 host, and no more round trips per host.
func BenchmarkE2EHostScaling(b *testing.B) {
	const noops, deploys = 20, 4
	a := newE2EApp(b, 8)
	all := make([]string, 8)
	for i := range all {
		all[i] = a.l.Hosts[i].Addr
	}
	fleet := func(n int, version string) {
		a.configure(version, "", "")
		a.editConfig(
			"servers:\n  web:\n    hosts: [10.231.0.11, 10.231.0.12]\n  worker:\n    hosts: [10.231.0.13]\n",
			"servers:\n  web:\n    hosts: ["+strings.Join(all[:n], ", ")+"]\n",
			"accessories:\n", "x-accessories-unused:\n")
	}
	fleet(8, "v2")
	a.mustApply() // both images on every host; puts a.env in the environment
	fleet(8, "v1")
	a.mustApply()

	var rows []hostScale
	for _, n := range []int{1, 2, 4, 8} {
		fleet(n, "v1")
		row := hostScale{hosts: n}
		ctx := context.Background()
		app, pool := benchLoad(b, a, "v1", nil)
		// The deploys on fewer hosts left containers to prune: settle first.
		if p, err := app.Plan(ctx); err == nil && !p.Empty() {
			if _, err := app.Apply(ctx, p); err != nil {
				b.Fatalf("%d hosts: settle: %v", n, err)
			}
		}
		if p, err := app.Plan(ctx); err != nil || !p.Empty() {
			var text strings.Builder
			if p != nil {
				p.WriteText(&text)
			}
			b.Fatalf("%d hosts: warm-up plan is not empty (%v):\n%s", n, err, text.String())
		}
		trips := func() int64 { return poolCommands(pool) + int64(app.APICalls()) }
		cmds, cpu, start := trips(), cpuTime(), time.Now()
		for range noops {
			if p, err := app.Plan(ctx); err != nil || !p.Empty() {
				b.Fatalf("%d hosts: no-op plan: %v", n, err)
			}
		}
		row.noopWall = time.Since(start) / noops
		row.noopCPU = (cpuTime() - cpu) / noops
		row.noopCmds = float64(trips()-cmds) / noops / float64(n)

		var walls, switched []time.Duration
		cmds = trips()
		prev := app
		for i := range deploys {
			version := "v2"
			if i%2 == 1 {
				version = "v1"
			}
			fleet(n, version)
			next, _ := benchLoad(b, a, version, pool)
			next.Inherit(prev)
			prev = next
			start := time.Now()
			p, err := next.Plan(ctx)
			if err != nil {
				b.Fatal(err)
			}
			res, err := next.Apply(ctx, p)
			if err != nil {
				b.Fatalf("%d hosts: deploy %s: %v", n, version, err)
			}
			walls = append(walls, time.Since(start))
			switched = append(switched, lastSwitch(res).Sub(start))
		}
		row.deployWall, row.deploySwit = median(walls), median(switched)
		row.deployCmds = float64(trips()-cmds) / deploys / float64(n)
		rows = append(rows, row)
		pool.Close()
	}

	one, eight := rows[0], rows[len(rows)-1]
	perHost := func(r hostScale) float64 { return r.noopCPU.Seconds() / float64(r.hosts) }
	ratio := perHost(eight) / perHost(one)
	b.ReportMetric(ratio, "cpu/host-8:1")
	if ratio > 1.5 {
		b.Errorf("a no-op pass costs %.2f× the CPU per host on 8 hosts as on 1 (bound 1.5×)", ratio)
	}
	if eight.noopCmds > one.noopCmds {
		b.Errorf("a no-op pass takes %.1f round trips per host on 8 hosts, more than the %.1f on 1", eight.noopCmds, one.noopCmds)
	}
	var table [][]string
	for _, r := range rows {
		table = append(table, []string{
			fmt.Sprint(r.hosts),
			ms(r.noopWall), fmt.Sprintf("%.2f×", r.noopWall.Seconds()/one.noopWall.Seconds()),
			fmt.Sprintf("%.1f", r.noopCmds), fmt.Sprintf("%.1f ms", perHost(r)*1000),
			fmt.Sprintf("%.2f×", perHost(r)/perHost(one)),
			ms(r.deploySwit), ms(r.deployWall), fmt.Sprintf("%.1f", r.deployCmds),
		})
	}
	benchReport(b, "Cost per host: 1, 2, 4 and 8 hosts (`BenchmarkE2EHostScaling`)",
		fmt.Sprintf("The web role on the first N lab hosts, HAProxy driver, warm SSH pool, no traffic. No-op pass: a plan of hosts already at the version, mean of %d. "+
			"Deploy: v1↔v2 with both images on the hosts, median of %d, the daemon's way (plan, then apply). CPU is capstan's own (user+system); the hosts' sshd and dockerd share the same 2 cores, so wall time grows with N while capstan's cost per host stays flat. "+
			"Bound: a no-op pass's CPU per host on 8 hosts within 1.5× of 1 host, and no more round trips per host (one Docker API call per host, plus one SSH command per pass: who holds Kamal's deploy lock, on the lock host).", noops, deploys),
		table, []string{"hosts", "no-op pass", "vs 1 host", "round trips / host", "CPU / host", "vs 1 host", "deploy: all switched", "deploy: done", "deploy round trips / host"})
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// median returns the middle of ds (the upper middle for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
