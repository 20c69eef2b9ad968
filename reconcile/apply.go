package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-dev/capstan/internal/failpoint"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// Result is what Apply did.
type Result struct {
	Plan     *Plan         `json:"-"`
	Version  string        `json:"version"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Hosts    []*HostResult `json:"hosts"`
	// RolledBack lists hosts switched back to the previous version after a
	// later host failed its health check.
	RolledBack []string `json:"rolled_back,omitempty"`
}

// HostResult is what Apply did on one host.
type HostResult struct {
	Host  string        `json:"host"`
	Steps []*StepResult `json:"steps"`
	Error string        `json:"error,omitempty"`

	err error // what Error says, with its sentinels
}

// StepResult is one executed step with its timing and, on failure, what
// explains it.
type StepResult struct {
	Step
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Phases splits a deploy: create (rename, env file, docker create),
	// wait (for the primary role's barrier), start, healthy+switch (ready,
	// for a role without a proxy), stop (the old container).
	Phases map[string]time.Duration `json:"phases,omitempty"`
	// Switched is when the new container took the traffic (or was judged
	// ready, for a role without a proxy).
	Switched time.Time `json:"switched,omitzero"`
	Error    string    `json:"error,omitempty"`
	// Logs are the new container's last log lines when it failed.
	Logs string `json:"logs,omitempty"`
}

// Failed reports whether any host failed.
func (r *Result) Failed() bool {
	for _, h := range r.Hosts {
		if h.Error != "" {
			return true
		}
	}
	return false
}

// applyRun is the state of one Apply.
type applyRun struct {
	a    *App
	plan *Plan
	res  *Result
	log  *slog.Logger

	mu       sync.Mutex
	hostRes  map[string]*HostResult
	switched []switched
	// lockWaited: the deploy lock was held by someone else when this
	// apply asked for it.
	lockWaited bool

	auditWG sync.WaitGroup
	// proxyBoot holds, per host, its proxy's boot in flight.
	proxyBoot map[string]*proxyBoot

	barrier     chan struct{} // closed when the first primary container is healthy
	barrierOnce sync.Once
	barrierErr  error
	primaryLeft int // primary-role deploys started and not finished

	// created holds app containers created ahead of their start, by
	// createKey.
	created map[string]*created
	// networks and logins hold the hosts where this apply created the
	// network and logged in to the registry.
	networks, logins sync.Map
	// slots bounds the hosts worked on at once (App.Parallel); a host
	// waiting at the barrier gives its slot back meanwhile.
	slots chan struct{}

	// groups are the boot groups (planBootGroups); inFirstGroup holds the
	// hosts of the first one, booted as soon as they are prepared.
	groups       [][]*HostPlan
	inFirstGroup map[string]bool
	// healthFailure is set when a new container failed its health check:
	// no further boot group starts.
	healthFailure atomic.Bool
	// jobErr is a post_deploy job's failure (the hosts switched already).
	jobErr error
}

func createKey(host, role string) string { return host + "\x00" + role }

// The failpoints of an apply (internal/failpoint): a test arms one in
// CAPSTAN_FAILPOINTS to crash capstan right there.
const (
	// FailAfterPull: the image pulled on every host that deploys, the
	// deploy lock held, nothing booted.
	FailAfterPull = "apply/after-pull"
	// FailAfterCreate: a new container created, not started.
	FailAfterCreate = "apply/after-create"
	// FailAfterStart: a new container started, not yet healthy or
	// switched; the old one serves.
	FailAfterStart = "apply/after-start"
	// FailAfterSwitch: the traffic moved to the new container, the old one
	// not stopped yet.
	FailAfterSwitch = "apply/after-switch"
	// FailDuringPrune: the first container of a prune removed, the others
	// not.
	FailDuringPrune = "apply/during-prune"
)

// Apply executes plan, the value Plan returned, in Kamal's order. Hosts that
// fail are reported in the result and converge on the next pass; the error
// is non-nil when any host failed.
func (a *App) Apply(ctx context.Context, plan *Plan) (*Result, error) {
	r := newApplyRun(a, plan)
	if !plan.Empty() {
		r.run(ctx)
	}
	return r.summary()
}

// newApplyRun returns the state of an Apply of plan, with a result per
// planned host (failed already when the host could not be observed).
func newApplyRun(a *App, plan *Plan) *applyRun {
	r := &applyRun{a: a, plan: plan, log: a.log().With("service", a.Config.Service, "version", plan.Version),
		res: &Result{Plan: plan, Version: plan.Version, Started: a.now()}, hostRes: map[string]*HostResult{}, proxyBoot: map[string]*proxyBoot{},
		barrier: make(chan struct{}), created: map[string]*created{}, slots: make(chan struct{}, a.parallel())}
	for _, hp := range plan.Hosts {
		hr := &HostResult{Host: hp.Host, Steps: []*StepResult{}}
		if hp.Error != "" {
			hr.Error = hp.Error
		}
		r.hostRes[hp.Host] = hr
		r.res.Hosts = append(r.res.Hosts, hr)
	}
	return r
}

// run is the sequence of an apply's steps, in Kamal's order:
//
//  1. pullAndLock: pull the image on the hosts that deploy it, take the
//     deploy lock meanwhile;
//  2. bootAllAccessories;
//  3. planBootGroups, then prepareAndBootFirstGroup: network, registry
//     login and the proxy's boot on every host, the first boot group's
//     containers created and started, healthy, switched, the old ones
//     stopped (deployRole);
//  4. bootGroupsInTurn: the other boot groups, or, after a health
//     failure, none of them and a rollback;
//  5. tagAndPrune: the latest tag, stale and unmanaged containers, prune;
//  6. runJobs(post_deploy), once every host switched.
//
// runJobs(pre_deploy) runs between 2 and 3: the release jobs before any
// container of the new version boots; a failure fails every planned host
// and nothing boots.
//
// Each step records its outcome per host; a host that failed takes no part
// in the steps after. Audit lines are written along the way; run returns
// once they are, and the lock is released.
func (r *applyRun) run(ctx context.Context) {
	defer r.auditWG.Wait()
	unlock, err := r.pullAndLock(ctx)
	if err != nil {
		r.failPlanned(err)
		return
	}
	defer unlock()
	failpoint.Hit(FailAfterPull)
	if r.lockWaited {
		// Whoever held the lock may have changed the hosts (another
		// capstan deploying the same revision): the plan is stale.
		if err := r.replan(ctx); err != nil {
			r.failPlanned(err)
			return
		}
	}
	defer r.waitProxyBoots()
	// Containers created and never started (a barrier or group that
	// failed, a cancelled pass) are removed, as if never created.
	defer r.removeUnstarted(ctx)
	if ctx.Err() != nil {
		return
	}
	r.bootAllAccessories(ctx)
	if err := r.runJobs(ctx, kamal.JobPreDeploy); err != nil {
		r.failPlanned(err)
		return
	}
	r.planBootGroups()
	r.prepareAndBootFirstGroup(ctx)
	if !r.bootGroupsInTurn(ctx) || ctx.Err() != nil {
		return
	}
	r.tagAndPrune(ctx)
	if !r.res.Failed() {
		r.jobErr = r.runJobs(ctx, kamal.JobPostDeploy)
	}
}

// summary ends an Apply: it stamps the result finished and returns it,
// with the hosts' errors joined (nil when none failed).
func (r *applyRun) summary() (*Result, error) {
	r.res.Finished = r.a.now()
	return r.res, r.err()
}

// err joins the errors of the failed hosts, each named; nil when none
// failed.
func (r *applyRun) err() error {
	var errs []error
	for _, h := range r.res.Hosts {
		switch {
		case h.err != nil: // keeps the sentinels (ErrUnhealthy, ErrLocked, …) for errors.Is
			errs = append(errs, fmt.Errorf("%s: %w", h.Host, h.err))
		case h.Error != "":
			errs = append(errs, fmt.Errorf("%s: %s", h.Host, h.Error))
		}
	}
	if r.jobErr != nil {
		errs = append(errs, r.jobErr)
	}
	return errors.Join(errs...)
}

// fail marks host failed with err, unless it failed already (the first
// error is the one reported).
func (r *applyRun) fail(host string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hr := r.hostRes[host]
	if hr.Error == "" {
		hr.Error, hr.err = err.Error(), err
	}
}

// failPlanned fails every reachable host with steps to take with err.
func (r *applyRun) failPlanned(err error) {
	for _, hp := range r.plan.Hosts {
		if hp.Error == "" && len(hp.Steps) > 0 {
			r.fail(hp.Host, err)
		}
	}
}

// failed reports whether host failed (in the plan or in this apply).
func (r *applyRun) failed(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hostRes[host].Error != ""
}

// record appends an executed step to host's result (a host outside the
// plan, where a release job ran, gets one).
func (r *applyRun) record(host string, sr *StepResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hr := r.hostRes[host]
	if hr == nil {
		hr = &HostResult{Host: host}
		r.hostRes[host] = hr
		r.res.Hosts = append(r.res.Hosts, hr)
	}
	hr.Steps = append(hr.Steps, sr)
}

// hostsWith returns the reachable, not yet failed hosts with a step of one
// of kinds, in plan order.
func (r *applyRun) hostsWith(kinds ...StepKind) []*HostPlan {
	var out []*HostPlan
	for _, hp := range r.plan.Hosts {
		if hp.Error != "" || r.failed(hp.Host) {
			continue
		}
		for _, s := range hp.Steps {
			if containsKind(kinds, s.Kind) {
				out = append(out, hp)
				break
			}
		}
	}
	return out
}

func containsKind(list []StepKind, k StepKind) bool {
	for _, x := range list {
		if x == k {
			return true
		}
	}
	return false
}

// names returns the hosts of hps, in order.
func names(hps []*HostPlan) []string {
	out := make([]string, len(hps))
	for i, h := range hps {
		out[i] = h.Host
	}
	return out
}

// forEachHost runs f for each host in parallel, at most App.Parallel at
// once (see slots).
func (r *applyRun) forEachHost(ctx context.Context, hosts []string, f func(ctx context.Context, i int, host string)) {
	forEachHost(ctx, r.slots, hosts, f)
}

// onNetwork reports whether a container is attached to network (so it
// exists).
func (o *Observed) onNetwork(network string) bool {
	for _, c := range o.Containers {
		for _, n := range c.Networks {
			if n == network {
				return true
			}
		}
	}
	return false
}

// byName returns the observed container named name, or nil.
func (o *Observed) byName(name string) *Container {
	for i := range o.Containers {
		if o.Containers[i].Name == name {
			return &o.Containers[i]
		}
	}
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
