package daemon

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/capstan-dev/capstan/hostexec"
)

// metrics are the Prometheus series of /metrics.
type metrics struct {
	reg       *prometheus.Registry
	passDur   *prometheus.HistogramVec
	deploys   *prometheus.CounterVec
	gitErrors *prometheus.CounterVec
	pools     sync.Map // app -> *hostexec.Pool
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.passDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "capstan_pass_duration_seconds", Help: "Duration of reconcile passes.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"app"})
	m.deploys = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capstan_deploys_total", Help: "Deploys by result."}, []string{"app", "result"})
	m.gitErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capstan_git_fetch_errors_total", Help: "Failed git syncs."}, []string{"app"})
	m.reg.MustRegister(m.passDur, m.deploys, m.gitErrors, collector{d: d, m: m},
		// go_goroutines, go_memstats_*, process_resident_memory_bytes…
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// collector reads gauges from the loops and SSH counters from the pools.
type collector struct {
	d *Daemon
	m *metrics
}

var (
	descDrift   = prometheus.NewDesc("capstan_drift_open", "Open drift items.", []string{"app"}, nil)
	descLastOK  = prometheus.NewDesc("capstan_last_successful_sync_timestamp_seconds", "Time of the last successful pass.", []string{"app"}, nil)
	descSSH     = prometheus.NewDesc("capstan_ssh_commands_total", "SSH commands run.", []string{"app", "host"}, nil)
	descSSHFail = prometheus.NewDesc("capstan_ssh_command_failures_total", "SSH commands that failed.", []string{"app", "host"}, nil)
	descPrepull = prometheus.NewDesc("capstan_prepulled", "Versions pulled onto a host ahead of their deploy (1 per version).", []string{"app", "host", "version"}, nil)
	descOwned   = prometheus.NewDesc("capstan_app_owned", "1 when this replica holds the app's lease and reconciles it (replicas sharing PostgreSQL); an app's other series come from its owner.", []string{"app", "replica"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDrift
	ch <- descLastOK
	ch <- descSSH
	ch <- descSSHFail
	ch <- descPrepull
	ch <- descOwned
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for name, r := range c.d.apps {
		if c.d.cluster != nil {
			owned := r.ten.Load() != nil
			ch <- prometheus.MustNewConstMetric(descOwned, prometheus.GaugeValue, map[bool]float64{true: 1}[owned], name, c.d.cluster.id)
			if !owned {
				continue
			}
		}
		st := r.loop.Status()
		ch <- prometheus.MustNewConstMetric(descDrift, prometheus.GaugeValue, float64(len(st.Drift)), name)
		if !st.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, float64(st.LastSuccess.Unix()), name)
		}
		for _, p := range c.d.prepulled(context.Background(), name, st.Version) {
			ch <- prometheus.MustNewConstMetric(descPrepull, prometheus.GaugeValue, 1, name, p.Host, p.Version)
		}
	}
	c.m.pools.Range(func(k, v any) bool {
		for host, s := range v.(*hostexec.Pool).Stats() {
			ch <- prometheus.MustNewConstMetric(descSSH, prometheus.CounterValue, float64(s.Commands), k.(string), host)
			ch <- prometheus.MustNewConstMetric(descSSHFail, prometheus.CounterValue, float64(s.Failures), k.(string), host)
		}
		return true
	})
}
