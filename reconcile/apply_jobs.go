package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// StepJob is a release job run in a one-off container (x-capstan.jobs);
// apply records it on the host it ran on, the plan lists it in Plan.Jobs.
const StepJob StepKind = "job"

// JobLedger remembers which release jobs succeeded for which revision of
// an app (the state store, adapted by internal/daemon), so that a retried
// pass of the same revision does not run them again. Methods must be safe
// for concurrent use.
type JobLedger interface {
	// JobSucceeded reports whether job succeeded for revision of app.
	JobSucceeded(ctx context.Context, app, revision, job string) (bool, error)
	// RecordJob records that job succeeded for revision of app.
	RecordJob(ctx context.Context, app, revision, job string) error
}

// JobScope ties an apply's release jobs to a revision. The zero value has
// no memory: every apply that deploys runs its jobs (capstan apply).
type JobScope struct {
	Ledger        JobLedger
	App, Revision string
	// Rerun runs the jobs even when they succeeded for Revision
	// (sync?force=1&rerun_jobs=1).
	Rerun bool
}

// PlannedJob is a release job a plan runs if it deploys.
type PlannedJob struct {
	Name    string        `json:"name"`
	When    kamal.JobWhen `json:"when"`
	Role    string        `json:"role"`
	Hosts   []string      `json:"hosts"`
	Cmd     []string      `json:"cmd"`
	Timeout string        `json:"timeout"`

	job kamal.Job
}

// String is the job as `capstan plan` prints it.
func (j PlannedJob) String() string {
	return fmt.Sprintf("%s job %s (%s) on %s, timeout %s: %s", j.When, j.Name, j.Role, strings.Join(j.Hosts, ", "), j.Timeout, kamal.ShellJoin(j.Cmd))
}

// plannedJobs returns the release jobs of a plan that deploys a
// container (none otherwise: jobs go with a release).
func (a *App) plannedJobs(hosts []*HostPlan) []PlannedJob {
	deploys := false
	for _, h := range hosts {
		for _, s := range h.Steps {
			deploys = deploys || s.Kind == StepDeploy
		}
	}
	if !deploys {
		return nil
	}
	var out []PlannedJob
	for _, j := range a.Config.Capstan.Jobs {
		out = append(out, PlannedJob{Name: j.Name, When: j.When, Role: j.Role, Hosts: a.Config.JobHosts(j), Cmd: j.Cmd, Timeout: j.Timeout.String(), job: j})
	}
	return out
}

// jobOutputMax bounds the output of a job kept with the pass (its end).
const jobOutputMax = 16 << 10

// runJobs runs the plan's release jobs of when, in order, each once per
// revision (JobScope), and returns the first failure. A job runs on its
// hosts in parallel; it counts as done once it succeeded on all of them.
// An exit or a timeout wraps ErrJobFailed; a host that could not run it
// (unreachable, SSH lost) wraps ErrHost and is retried next pass.
func (r *applyRun) runJobs(ctx context.Context, when kamal.JobWhen) error {
	if len(r.hostsWith(StepDeploy)) == 0 {
		return nil
	}
	s := r.a.Jobs
	for _, j := range r.plan.Jobs {
		if j.When != when {
			continue
		}
		if s.Ledger != nil && !s.Rerun {
			done, err := s.Ledger.JobSucceeded(ctx, s.App, s.Revision, j.Name)
			if err != nil {
				return fmt.Errorf("%w: job %s: read the state store: %w", ErrHost, j.Name, err)
			}
			if done {
				r.log.Info("release job already succeeded for this revision", "job", j.Name)
				continue
			}
		}
		if err := r.runJob(ctx, j); err != nil {
			return err
		}
		if s.Ledger != nil {
			if err := s.Ledger.RecordJob(context.WithoutCancel(ctx), s.App, s.Revision, j.Name); err != nil {
				r.log.Error("record release job", "job", j.Name, "err", err)
			}
		}
	}
	return nil
}

// runJob runs j on each of its hosts in parallel; errors are joined.
func (r *applyRun) runJob(ctx context.Context, j PlannedJob) error {
	errs := make([]error, len(j.Hosts))
	var wg sync.WaitGroup
	for i, h := range j.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.runJobOn(ctx, j, h)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// jobHost returns the host a job runs on, observed: from the plan, or,
// for a host this pass does not converge (it runs the revision already,
// another host is being caught up), observed now.
func (r *applyRun) jobHost(ctx context.Context, host string) (*HostPlan, error) {
	for _, hp := range r.plan.Hosts {
		if hp.Host == host {
			if hp.Error != "" || hp.observed == nil {
				return nil, fmt.Errorf("%w: %s: %s", ErrUnreachable, host, hp.Error)
			}
			return hp, nil
		}
	}
	for _, want := range r.a.Hosts {
		if want.Host == host {
			octx, cancel := context.WithTimeout(ctx, r.a.observeTimeout())
			defer cancel()
			o, err := r.a.observe(octx, host)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, host, err)
			}
			return &HostPlan{Host: host, observed: o, desired: want, Steps: []Step{}, Drift: []Drift{}}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not a host of the app", ErrHost, host)
}

// runJobOn runs j in a one-off container on host: the image there (pulled
// if needed), the network and the role's env file first, then `docker run
// --rm` with its output captured, killed and removed when it outlives the
// job's timeout. The run is recorded as a step of host, with its output.
func (r *applyRun) runJobOn(ctx context.Context, j PlannedJob, host string) (err error) {
	a := r.a
	start := a.now()
	name, run, err := a.Config.ExecRun(kamal.ExecOptions{Role: j.Role, Host: host, Cmd: j.Cmd})
	sr := &StepResult{Step: Step{Kind: StepJob, Host: host, Role: j.Role, Container: name, ToVersion: a.Config.Version.Name(), Reason: string(j.When) + " job " + j.Name}, Start: start}
	defer func() {
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(host, sr)
	}()
	if err != nil {
		return fmt.Errorf("%w: job %s: %w", ErrHost, j.Name, err)
	}
	hp, err := r.jobHost(ctx, host)
	if err != nil {
		return fmt.Errorf("job %s: %w", j.Name, err)
	}
	if err = r.jobReady(ctx, hp, j.Role); err != nil {
		return fmt.Errorf("job %s: %w", j.Name, err)
	}
	r.audit(ctx, host, j.Role, "Executed cmd '"+kamal.ShellJoin(j.Cmd)+"' on app version "+a.Config.Version.Name())
	r.log.Info("running release job", "job", j.Name, "host", host, "container", name)
	jctx, cancel := context.WithTimeout(ctx, j.job.Timeout)
	defer cancel()
	argv := append([]string{"sh", "-c", `"$@" 2>&1`, "sh"}, run.Expand(hp.observed.Home)...)
	out, runErr := a.SSH.Run(jctx, host, argv, nil)
	sr.Logs = r.jobOutput(out, runErr)
	switch {
	case runErr == nil:
		return nil
	case jctx.Err() != nil:
		r.removeJobContainer(ctx, host, name)
		if ctx.Err() != nil {
			return fmt.Errorf("job %s on %s: %w", j.Name, host, ctx.Err())
		}
		return fmt.Errorf("%w: %s on %s: no exit within its timeout %s (container killed and removed)", ErrJobFailed, j.Name, host, j.Timeout)
	case ExitCode(runErr) >= 0:
		return fmt.Errorf("%w: %s on %s: exit %d", ErrJobFailed, j.Name, host, ExitCode(runErr))
	}
	r.removeJobContainer(ctx, host, name)
	return fmt.Errorf("%w: job %s on %s: %w", ErrHost, j.Name, host, runErr)
}

// jobReady makes what a job's container needs on its host: the image
// (pull, a no-op when present), the network and the role's env file (the
// boot writes it too; the job runs before any boot).
func (r *applyRun) jobReady(ctx context.Context, hp *HostPlan, role string) error {
	if _, err := r.pull(ctx, hp.Host); err != nil {
		return err
	}
	if err := r.ensureNetwork(ctx, hp); err != nil {
		return err
	}
	for _, spec := range hp.desired.Apps {
		if spec.Role == role {
			return r.uploadRunFiles(ctx, hp, spec)
		}
	}
	return fmt.Errorf("%w: role %s has no container on %s", ErrHost, role, hp.Host)
}

// jobOutput is what a job printed (stdout and stderr merged; an adapter's
// stderr too), its last jobOutputMax bytes, secrets masked.
func (r *applyRun) jobOutput(out []byte, err error) string {
	s := string(out)
	var ee *ExitError
	if errors.As(err, &ee) && ee.Stderr != "" {
		s += ee.Stderr
	}
	if len(s) > jobOutputMax {
		s = s[len(s)-jobOutputMax:]
	}
	return r.redact(s)
}

// removeJobContainer kills and removes a job's container (docker rm -f):
// ending the docker client does not stop the container.
func (r *applyRun) removeJobContainer(ctx context.Context, host, name string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := r.a.SSH.Run(rctx, host, []string{"docker", "rm", "-f", name}, nil); err != nil {
		r.log.Warn("remove a release job's container", "host", host, "container", name, "err", err)
	}
}
