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
	"testing/fstest"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// jobHosts is a fake fleet for the release-job phase: it answers the
// observe command from containers and the pull as "present", runs a job's
// `docker run` with job, and logs every other command and upload in
// order ("host: argv", "host: upload PATH"; an audit line as its stdin).
type jobHosts struct {
	t          *testing.T
	containers map[string][]Container
	job        func(ctx context.Context, host string, argv []string) ([]byte, error)

	mu  sync.Mutex
	log []string
}

func (h *jobHosts) add(s string) { h.mu.Lock(); h.log = append(h.log, s); h.mu.Unlock() }

func (h *jobHosts) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	switch {
	case len(argv) > 2 && strings.HasPrefix(argv[2], "docker ps -a"):
		return ps(h.t, h.containers[host]...), nil
	case len(argv) > 2 && argv[2] == pullScript:
		return []byte("present\n[]|testapp\n"), nil
	case len(argv) > 4 && argv[2] == `"$@" 2>&1`:
		h.add(host + ": " + strings.Join(argv[4:], " "))
		return h.job(ctx, host, argv[4:])
	case len(argv) > 2 && strings.Contains(argv[2], `cat >> "$1"`): // audit
		b, _ := io.ReadAll(stdin)
		h.add(host + ": audit " + strings.TrimSpace(string(b)))
		return nil, nil
	}
	h.add(host + ": " + strings.Join(argv, " "))
	return nil, nil
}

func (h *jobHosts) Upload(_ context.Context, host, path string, _ fs.FileMode, _ []byte) error {
	h.add(host + ": upload " + path)
	return nil
}

func (h *jobHosts) Dial(context.Context, string, string, string) (net.Conn, error) {
	return nil, errors.New("no Docker API in this test")
}

func (h *jobHosts) commands() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.log...)
}

// index returns the position of the first command containing sub, -1 if
// none.
func index(cmds []string, sub string) int {
	for i, c := range cmds {
		if strings.Contains(c, sub) {
			return i
		}
	}
	return -1
}

// memJobs is a JobLedger in a map.
type memJobs struct {
	mu   sync.Mutex
	done map[string]bool
}

func (m *memJobs) JobSucceeded(_ context.Context, app, rev, job string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done[app+"/"+rev+"/"+job], nil
}

func (m *memJobs) RecordJob(_ context.Context, app, rev, job string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done[app+"/"+rev+"/"+job] = true
	return nil
}

// jobApp is testApp at v2 with jobs, its hosts running v1, the job
// answering with job.
func jobApp(t *testing.T, jobs string, job func(ctx context.Context, host string, argv []string) ([]byte, error)) (*App, *jobHosts) {
	t.Helper()
	fsys := fstest.MapFS{
		"config/deploy.yml": {Data: []byte(testDeploy + "x-capstan:\n  jobs:\n" + jobs)},
		".kamal/secrets":    {Data: []byte("REGISTRY_PASSWORD=pw\nSECRET_KEY=s3cret-value\n")},
	}
	cfg, err := kamal.Load(fsys, kamal.LoadOptions{Version: "v2", FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	plans, err := cfg.Plans()
	if err != nil {
		t.Fatal(err)
	}
	a := &App{Config: cfg, Hosts: plans, ProxyContainer: "kamal-proxy", LockTimeout: time.Second,
		Redact: func(s string) string { return strings.ReplaceAll(s, "s3cret-value", "[REDACTED]") }}
	h := &jobHosts{t: t, containers: upToDate(testApp(t, "v1"), "v1"), job: job}
	a.SSH = h
	return a, h
}

const migrateJob = "    - {name: migrate, role: web, cmd: bin/migrate --all, timeout: 1}\n"

func exitWith(code int, out string) func(context.Context, string, []string) ([]byte, error) {
	return func(context.Context, string, []string) ([]byte, error) {
		if code == 0 {
			return []byte(out), nil
		}
		return []byte(out), &ExitError{Code: code, Err: fmt.Errorf("exit status %d", code)}
	}
}

// TestApply_PreDeployJobFailureBootsNothing: a pre_deploy job that exits
// 3 runs after the pull and the lock, on the role's first host, with the
// role's env file written first; then nothing of the new version is
// created, every host fails with ErrJobFailed (a bad release), and the
// job's output is kept, masked.
func TestApply_PreDeployJobFailureBootsNothing(t *testing.T) {
	a, h := jobApp(t, migrateJob, exitWith(3, "migrating with s3cret-value\nboom\n"))
	ctx := context.Background()
	plan, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Jobs) != 1 || strings.Join(plan.Jobs[0].Hosts, ",") != "10.0.0.1" {
		t.Fatalf("planned jobs %+v", plan.Jobs)
	}
	var text strings.Builder
	plan.WriteText(&text)
	if !strings.Contains(text.String(), "run pre_deploy job migrate (web) on 10.0.0.1, timeout 1s: bin/migrate --all") {
		t.Errorf("plan text:\n%s", text.String())
	}
	res, err := a.Apply(ctx, plan)
	if !errors.Is(err, ErrJobFailed) || !strings.Contains(err.Error(), "migrate on 10.0.0.1: exit 3") {
		t.Fatalf("apply error %v", err)
	}
	if outcome, permanent := classifyResult(res, err); outcome != OutcomeFailed || !permanent {
		t.Errorf("classified %s permanent=%v, want a bad release", outcome, permanent)
	}
	for _, hr := range res.Hosts {
		if !errors.Is(hr.err, ErrJobFailed) {
			t.Errorf("%s: error %v", hr.Host, hr.err)
		}
	}
	cmds := h.commands()
	lock, env := index(cmds, "mkdir \"$1\""), index(cmds, "10.0.0.1: upload .kamal/apps/testapp/env/roles/web.env")
	net, run := index(cmds, "docker network"), index(cmds, "docker run --rm --name testapp-web-exec-v2-")
	if lock < 0 || env < 0 || run < 0 || !(lock < run && env < run) {
		t.Fatalf("lock %d, env file %d, network %d, job %d in:\n%s", lock, env, net, run, strings.Join(cmds, "\n"))
	}
	for _, c := range cmds {
		if strings.Contains(c, "docker create") || strings.Contains(c, "--detach") || strings.Contains(c, "kamal-proxy deploy") || strings.Contains(c, "docker start") {
			t.Errorf("booted after a failed job: %s", c)
		}
	}
	if i := index(cmds, "audit "); i < 0 || !strings.Contains(cmds[i], "[web] Executed cmd 'bin/migrate --all' on app version v2") {
		t.Errorf("audit line missing:\n%s", strings.Join(cmds, "\n"))
	}
	var job *StepResult
	for _, s := range res.Hosts[0].Steps {
		if s.Kind == StepJob {
			job = s
		}
	}
	if job == nil || job.Logs != "migrating with [REDACTED]\nboom\n" || !strings.Contains(job.Error, "exit 3") {
		t.Fatalf("job step %v: logs %q error %q", job, job.Logs, job.Error)
	}
	if strings.Contains(fmt.Sprint(passSteps(res)), "s3cret-value") {
		t.Error("secret in the recorded steps")
	}
}

// TestApply_JobOncePerRevision: with a ledger, a job that succeeded for
// the revision is skipped by the next apply, and run again on Rerun.
func TestApply_JobOncePerRevision(t *testing.T) {
	runs := 0
	a, _ := jobApp(t, migrateJob, func(context.Context, string, []string) ([]byte, error) { runs++; return nil, nil })
	ctx := context.Background()
	plan, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ledger := &memJobs{done: map[string]bool{}}
	a.Jobs = JobScope{Ledger: ledger, App: "testapp", Revision: "r1"}
	for i := range 2 {
		if err := newApplyRun(a, plan).runJobs(ctx, kamal.JobPreDeploy); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if runs != 1 || !ledger.done["testapp/r1/migrate"] {
		t.Fatalf("%d runs, ledger %v; want 1 run recorded", runs, ledger.done)
	}
	a.Jobs.Rerun = true
	if err := newApplyRun(a, plan).runJobs(ctx, kamal.JobPreDeploy); err != nil || runs != 2 {
		t.Fatalf("rerun: %v, %d runs", err, runs)
	}
	a.Jobs = JobScope{Ledger: ledger, App: "testapp", Revision: "r2"}
	if err := newApplyRun(a, plan).runJobs(ctx, kamal.JobPreDeploy); err != nil || runs != 3 {
		t.Fatalf("new revision: %v, %d runs", err, runs)
	}
	// Without a ledger (capstan apply) it runs every time.
	a.Jobs = JobScope{}
	for range 2 {
		_ = newApplyRun(a, plan).runJobs(ctx, kamal.JobPreDeploy)
	}
	if runs != 5 {
		t.Errorf("%d runs without a ledger, want 5", runs)
	}
}

// TestApply_JobTimeoutRemovesContainer: a job still running at its
// timeout fails the release and its container is killed and removed.
func TestApply_JobTimeoutRemovesContainer(t *testing.T) {
	a, h := jobApp(t, migrateJob, func(ctx context.Context, _ string, _ []string) ([]byte, error) {
		<-ctx.Done()
		return []byte("still going\n"), ctx.Err()
	})
	ctx := context.Background()
	plan, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := newApplyRun(a, plan)
	start := time.Now()
	err = r.runJobs(ctx, kamal.JobPreDeploy)
	if !errors.Is(err, ErrJobFailed) || !strings.Contains(err.Error(), "timeout 1s") {
		t.Fatalf("error %v", err)
	}
	if took := time.Since(start); took < time.Second || took > 10*time.Second {
		t.Errorf("took %s for a 1s timeout", took)
	}
	cmds := h.commands()
	run := index(cmds, "docker run --rm --name ")
	if run < 0 {
		t.Fatalf("no job run in %q", cmds)
	}
	name := strings.Fields(cmds[run])[5]
	if rm := index(cmds, "10.0.0.1: docker rm -f "+name); rm < run {
		t.Errorf("container %s not removed after its timeout:\n%s", name, strings.Join(cmds, "\n"))
	}
}

// TestApply_JobOnAllHostsAndHostError: host: all runs on every host of the
// role; a host that cannot run it (SSH lost) is a host error, retried,
// not a bad release.
func TestApply_JobOnAllHostsAndHostError(t *testing.T) {
	a, h := jobApp(t, "    - {name: warm, role: web, cmd: warm, host: all}\n", func(_ context.Context, host string, _ []string) ([]byte, error) {
		if host == "10.0.0.2" {
			return nil, errors.New("ssh: connection lost")
		}
		return nil, nil
	})
	ctx := context.Background()
	plan, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = newApplyRun(a, plan).runJobs(ctx, kamal.JobPreDeploy)
	if err == nil || errors.Is(err, ErrJobFailed) || !errors.Is(err, ErrHost) {
		t.Fatalf("error %v, want a host error", err)
	}
	cmds := h.commands()
	if index(cmds, "10.0.0.1: docker run --rm") < 0 || index(cmds, "10.0.0.2: docker run --rm") < 0 {
		t.Errorf("not run on both web hosts:\n%s", strings.Join(cmds, "\n"))
	}
	if index(cmds, "10.0.0.2: docker rm -f") < 0 {
		t.Error("the container of a run cut short is not removed")
	}
}

// TestPlan_NoJobsWithoutDeploy: a plan that deploys nothing runs no job.
func TestPlan_NoJobsWithoutDeploy(t *testing.T) {
	a, h := jobApp(t, migrateJob, exitWith(0, ""))
	h.containers = upToDate(a, "v2")
	plan, err := a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Jobs) != 0 {
		t.Errorf("jobs %+v for a plan without deploy", plan.Jobs)
	}
}

// TestLoop_TriggerRerunJobs: rerun_jobs is a forced pass that reruns the
// jobs, and is not lost behind a plain trigger.
func TestLoop_TriggerRerunJobs(t *testing.T) {
	l := &Loop{}
	l.Trigger(TriggerPoll, false)
	l.TriggerRerunJobs(TriggerManual)
	tr := <-l.wake
	if !tr.Force || !tr.RerunJobs || tr.Kind != TriggerManual {
		t.Errorf("trigger %+v", tr)
	}
}

// TestApply_JobOnHostOutsideThePass: a pass that catches up one host (the
// others run the revision already) runs a job whose host it does not
// converge there, observing it first.
func TestApply_JobOnHostOutsideThePass(t *testing.T) {
	a, h := jobApp(t, "    - {name: warm, role: web, cmd: warm, when: post_deploy}\n", exitWith(4, "cold\n"))
	ctx := context.Background()
	plan, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub := plan.only(func(hp *HostPlan) bool { return hp.Host == "10.0.0.2" })
	r := newApplyRun(a, sub)
	if err := r.runJobs(ctx, kamal.JobPreDeploy); err != nil || len(h.commands()) != 0 {
		t.Fatalf("pre_deploy ran a post_deploy job: %v %q", err, h.commands())
	}
	err = r.runJobs(ctx, kamal.JobPostDeploy)
	if !errors.Is(err, ErrJobFailed) || !strings.Contains(err.Error(), "warm on 10.0.0.1: exit 4") {
		t.Fatalf("error %v", err)
	}
	if index(h.commands(), "10.0.0.1: docker run --rm") < 0 {
		t.Errorf("not run on 10.0.0.1: %q", h.commands())
	}
	r.jobErr = err
	res, err := r.summary()
	if outcome, permanent := classifyResult(res, err); outcome != OutcomeFailed || !permanent || res.Failed() {
		t.Errorf("a failed post_deploy job: %s permanent=%v, hosts failed=%v", outcome, permanent, res.Failed())
	}
	var found bool
	for _, hr := range res.Hosts {
		for _, s := range hr.Steps {
			found = found || (hr.Host == "10.0.0.1" && s.Kind == StepJob && s.Logs == "cold\n")
		}
	}
	if !found {
		t.Errorf("the job's step is not recorded on 10.0.0.1: %+v", res.Hosts)
	}
}
