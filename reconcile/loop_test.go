package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptedHosts answers the observe command from a table of containers per
// host; a host in down fails, one in cut never answers. Any other command
// (but reading the lock) is recorded as a change; these tests expect none.
type scriptedHosts struct {
	t          *testing.T
	mu         sync.Mutex
	containers map[string][]Container
	down, cut  map[string]bool
	changes    []string
}

func (s *scriptedHosts) Run(ctx context.Context, host string, argv []string, _ io.Reader) ([]byte, error) {
	s.mu.Lock()
	down, cut, cs := s.down[host], s.cut[host], s.containers[host]
	s.mu.Unlock()
	switch {
	case down:
		return nil, errors.New("dial tcp " + host + ":22: connect: no route to host")
	case cut:
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if len(argv) > 2 && strings.HasPrefix(argv[2], "docker ps -a") {
		return ps(s.t, cs...), nil
	}
	if len(argv) > 2 && strings.HasPrefix(argv[2], "cat ") { // the lock's details: a read
		return nil, nil
	}
	s.mu.Lock()
	s.changes = append(s.changes, host+": "+strings.Join(argv, " "))
	s.mu.Unlock()
	return nil, nil
}

func (s *scriptedHosts) Upload(context.Context, string, string, fs.FileMode, []byte) error {
	return errors.New("no uploads in this test")
}

func (s *scriptedHosts) Dial(context.Context, string, string, string) (net.Conn, error) {
	return nil, errors.New("no Docker API in this test") // observe falls back to the script
}

func (s *scriptedHosts) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// memRecorder is the loop's memory, in a map.
type memRecorder struct {
	mu        sync.Mutex
	attempted string
	failed    bool
	converged map[string]string
	open      map[Drift]bool // Detail cleared: the key is host, kind, role
	passes    []string       // outcomes
}

func (m *memRecorder) RecordRevision(context.Context, string, Revision) error { return nil }
func (m *memRecorder) StartPass(context.Context, string, string, string, Request) (int64, error) {
	return 1, nil
}
func (m *memRecorder) FinishPass(_ context.Context, _ int64, outcome, _, _ string, _ []PassStep) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.passes = append(m.passes, outcome)
	return nil
}
func (m *memRecorder) LastAttempt(context.Context, string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempted, m.failed, nil
}
func (m *memRecorder) RecordAttempt(_ context.Context, _, rev string, failed bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempted, m.failed = rev, failed
	return nil
}
func (m *memRecorder) Converged(context.Context, string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for h, r := range m.converged {
		out[h] = r
	}
	return out, nil
}
func (m *memRecorder) MarkConverged(_ context.Context, _, rev string, hosts []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range hosts {
		m.converged[h] = rev
	}
	return nil
}
func (m *memRecorder) SyncDrift(_ context.Context, _ string, scope []DriftScope, items []Drift) (opened, resolved []Drift, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[Drift]bool{}
	for _, d := range items {
		k := Drift{Host: d.Host, Kind: d.Kind, Role: d.Role}
		seen[k] = true
		if !m.open[k] {
			m.open[k] = true
			opened = append(opened, d)
		}
	}
	for k := range m.open {
		for _, sc := range scope {
			if sc.Host == k.Host && (sc.Kinds == nil || containsDriftKind(sc.Kinds, k.Kind)) && !seen[k] {
				delete(m.open, k)
				resolved = append(resolved, k)
			}
		}
	}
	return opened, resolved, nil
}

func containsDriftKind(list []DriftKind, k DriftKind) bool {
	for _, x := range list {
		if x == k {
			return true
		}
	}
	return false
}

type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (e *eventLog) Notify(ev Event) { e.mu.Lock(); e.events = append(e.events, ev); e.mu.Unlock() }
func (e *eventLog) count(kind string, drift DriftKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if ev.Kind == kind && (drift == "" || ev.Drift == string(drift)) {
			n++
		}
	}
	return n
}

type fixedSource struct{ sha string }

func (f fixedSource) Sync(context.Context) (Revision, bool, error) {
	return Revision{SHA: f.sha}, false, nil
}

// upToDate is what every host of testApp runs at version.
func upToDate(a *App, version string) map[string][]Container {
	return map[string][]Container{
		"10.0.0.1": {proxyC(), running(a, "10.0.0.1", "web", version)},
		"10.0.0.2": {proxyC(), running(a, "10.0.0.2", "web", version)},
		"10.0.0.3": {running(a, "10.0.0.3", "worker", version)},
	}
}

func newTestLoop(t *testing.T) (*Loop, *scriptedHosts, *memRecorder, *eventLog) {
	t.Helper()
	a := testApp(t, "v1")
	h := &scriptedHosts{t: t, containers: upToDate(a, "v1"), down: map[string]bool{}, cut: map[string]bool{}}
	a.SSH = h
	a.ObserveTimeout = 100 * time.Millisecond
	rec := &memRecorder{converged: map[string]string{}, open: map[Drift]bool{}}
	ev := &eventLog{}
	l := &Loop{Name: "testapp", Source: fixedSource{sha: "r1"}, Record: rec, Notify: ev,
		Load: func(context.Context, Revision) (*App, error) { return a, nil }}
	return l, h, rec, ev
}

func TestLoop_UnreachableHostIsPartialUntilItConverges(t *testing.T) {
	l, h, rec, ev := newTestLoop(t)
	ctx := context.Background()
	h.set(func() { h.down["10.0.0.2"] = true; h.cut["10.0.0.3"] = true })
	for i := 0; i < 3; i++ {
		if err := l.SyncNow(ctx, TriggerPoll, false); err != nil {
			t.Fatal(err)
		}
		st := l.Status()
		if st.LastOutcome != OutcomePartial || !st.LastSuccess.IsZero() {
			t.Fatalf("pass %d: outcome %q last_success %v; want partial and never", i, st.LastOutcome, st.LastSuccess)
		}
		if strings.Join(st.Unreachable, ",") != "10.0.0.2,10.0.0.3" || strings.Join(st.Pending, ",") != "10.0.0.2,10.0.0.3" {
			t.Fatalf("pass %d: unreachable %v pending %v", i, st.Unreachable, st.Pending)
		}
	}
	if n := ev.count("drift_opened", DriftUnreachable); n != 2 {
		t.Fatalf("%d unreachable drift_opened alerts for two hosts over three passes", n)
	}
	if !strings.Contains(l.Status().Drift[1].Detail, "no answer within 100ms") {
		t.Errorf("cut host's detail: %q", l.Status().Drift[1].Detail)
	}
	h.set(func() { h.down, h.cut = map[string]bool{}, map[string]bool{} })
	if err := l.SyncNow(ctx, TriggerPoll, false); err != nil {
		t.Fatal(err)
	}
	st := l.Status()
	if st.LastOutcome != OutcomeNoop || st.LastSuccess.IsZero() || len(st.Pending) != 0 {
		t.Fatalf("after the hosts return: outcome %q last_success %v pending %v", st.LastOutcome, st.LastSuccess, st.Pending)
	}
	if n := ev.count("drift_resolved", DriftUnreachable); n != 2 {
		t.Errorf("%d unreachable drift_resolved alerts, want 2", n)
	}
	if rec.converged["10.0.0.2"] != "r1" || rec.converged["10.0.0.3"] != "r1" {
		t.Errorf("converged %v", rec.converged)
	}
	if ev.count("deploy_succeeded", "") != 0 || len(h.changes) != 0 {
		t.Errorf("nothing was deployed, yet: events %v changes %v", ev.events, h.changes)
	}
}

func TestLoop_EveryHostUnreachableFails(t *testing.T) {
	l, h, _, ev := newTestLoop(t)
	h.set(func() { h.down = map[string]bool{"10.0.0.1": true, "10.0.0.2": true, "10.0.0.3": true} })
	for i := 0; i < 2; i++ {
		_ = l.SyncNow(context.Background(), TriggerPoll, false)
	}
	if st := l.Status(); st.LastOutcome != OutcomeFailed || !strings.Contains(st.LastError, "no host reachable") {
		t.Fatalf("outcome %q error %q", st.LastOutcome, st.LastError)
	}
	if n := ev.count("deploy_failed", ""); n != 1 {
		t.Errorf("%d deploy_failed alerts over two passes, want 1", n)
	}
}

func TestLoop_QuietPassOnlyObservesConvergedHosts(t *testing.T) {
	l, h, rec, ev := newTestLoop(t)
	ctx := context.Background()
	if err := l.SyncNow(ctx, TriggerStartup, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.converged) != 3 {
		t.Fatalf("converged after the first pass: %v", rec.converged)
	}
	// Stopped by hand on a converged host.
	h.set(func() {
		c := h.containers["10.0.0.1"][1]
		c.State, c.Status = "exited", "Exited (0) 1 second ago"
		h.containers["10.0.0.1"][1] = c
	})
	for i := 0; i < 5; i++ {
		if err := l.SyncNow(ctx, TriggerPoll, false); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.changes) != 0 {
		t.Fatalf("a quiet pass changed a converged host: %v", h.changes)
	}
	if n := ev.count("drift_opened", DriftStopped); n != 1 {
		t.Errorf("%d drift_opened alerts for one stopped container", n)
	}
	if n := ev.count("deploy_succeeded", ""); n != 0 {
		t.Errorf("%d deploy_succeeded alerts for a deploy nobody asked for", n)
	}
	if st := l.Status(); len(st.Drift) != 1 || st.Drift[0].Kind != DriftStopped {
		t.Errorf("status drift %v", st.Drift)
	}
	// A host that joined the config (never converged) is a target.
	delete(rec.converged, "10.0.0.3")
	if err := l.SyncNow(ctx, TriggerPoll, false); err != nil {
		t.Fatal(err)
	}
	if rec.converged["10.0.0.3"] != "r1" || len(h.changes) != 0 {
		t.Errorf("joined host: converged %v changes %v", rec.converged, h.changes)
	}
}

// failingSource fails every sync with err.
type failingSource struct{ err error }

func (f failingSource) Sync(context.Context) (Revision, bool, error) { return Revision{}, false, f.err }

func TestLoop_GitErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		poll   time.Duration
		syncs  int // failures seen before the check
		alerts int
	}{
		{"refused credentials alert at once", fmt.Errorf("%w: git authentication failed", ErrPermanent), time.Hour, 1, 1},
		{"a blip alerts only after three failures", errors.New("connection reset"), 500 * time.Millisecond, 2, 0},
		{"a lasting outage alerts once", errors.New("connection reset"), 10 * time.Millisecond, 5, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := &eventLog{}
			l := &Loop{Name: "testapp", Source: failingSource{c.err}, Notify: ev, Poll: c.poll}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { l.Run(ctx); close(done) }()
			deadline := time.Now().Add(30 * time.Second)
			for l.Status().GitErrors < c.syncs && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			cancel()
			<-done
			if n := ev.count("git_unreachable", ""); n != c.alerts {
				t.Errorf("%d git_unreachable alerts after %d failures, want %d", n, l.Status().GitErrors, c.alerts)
			}
		})
	}
}
