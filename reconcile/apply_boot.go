package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/internal/failpoint"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// planBootGroups slices the hosts to boot into boot groups (boot.limit),
// those deploying the primary role first, and arms the barrier: open at
// once when no host deploys the primary role, else waiting for the
// primary-role deploys of the first group.
func (r *applyRun) planBootGroups() {
	r.groups = bootGroups(r.primaryFirst(r.hostsWith(StepDeploy, StepReassert)), r.a.Config.Boot.Limit)
	r.inFirstGroup = map[string]bool{}
	if len(r.groups) > 0 {
		for _, hp := range r.groups[0] {
			r.inFirstGroup[hp.Host] = true
		}
	}
	if !slices.ContainsFunc(r.hostsWith(StepDeploy), r.hasPrimaryDeploy) {
		r.openBarrier(nil)
	} else if len(r.groups) > 0 {
		r.countPrimaries(r.groups[0])
	}
}

// prepareAndBootFirstGroup works on every host to prepare, in parallel:
// network and proxy (in the background) and, on the hosts of the first
// boot group, the app containers, created and then started at once:
// primary role first, the other roles at the barrier.
func (r *applyRun) prepareAndBootFirstGroup(ctx context.Context) {
	prep := r.hostsWith(StepConnect, StepBootProxy, StepDeploy, StepReassert)
	r.forEachHost(ctx, names(prep), func(ctx context.Context, i int, host string) {
		hp, first := prep[i], r.inFirstGroup[host]
		if err := r.prepare(ctx, hp, first); err != nil {
			r.fail(host, err)
			if first {
				r.primariesGone(hp)
			}
			return
		}
		if first {
			r.bootHost(ctx, hp)
		}
	})
}

// bootGroupsInTurn boots the boot groups after the first, each after
// boot.wait; hosts in a group in parallel. A bad release (a health
// failure, in any group) stops them: the hosts of later groups are failed
// unattempted and those that already switched go back unless the app
// opted out. It reports whether the boot went on to the end.
func (r *applyRun) bootGroupsInTurn(ctx context.Context) bool {
	for gi := range r.groups {
		if gi > 0 {
			r.bootWait(ctx)
			if ctx.Err() == nil && !r.healthFailure.Load() {
				r.bootGroup(ctx, r.groups[gi])
			}
		}
		if r.healthFailure.Load() {
			r.skipGroupsAfter(gi)
			if !r.a.NoRollback {
				r.rollback(ctx)
			}
			return false
		}
	}
	return true
}

// bootWait sleeps boot.wait between boot groups, unless a health failure
// stops them anyway or ctx ends.
func (r *applyRun) bootWait(ctx context.Context) {
	if wait := r.a.Config.Boot.Wait; wait > 0 && !r.healthFailure.Load() {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(wait) * time.Second):
		}
	}
}

// bootGroup boots the hosts of g not failed yet, in parallel.
func (r *applyRun) bootGroup(ctx context.Context, g []*HostPlan) {
	var left []*HostPlan
	for _, hp := range g {
		if !r.failed(hp.Host) {
			left = append(left, hp)
		}
	}
	r.countPrimaries(left)
	r.forEachHost(ctx, names(left), func(ctx context.Context, i int, host string) { r.bootHost(ctx, left[i]) })
}

// skipGroupsAfter fails the hosts of the boot groups after group gi as not
// attempted.
func (r *applyRun) skipGroupsAfter(gi int) {
	for _, later := range r.groups[gi+1:] {
		for _, hp := range later {
			r.fail(hp.Host, fmt.Errorf("%w: not attempted after an earlier boot group failed", ErrBarrier))
		}
	}
}

// bootHost deploys hp (deployHost) and fails it on error; a health failure
// stops the boot groups not started yet.
func (r *applyRun) bootHost(ctx context.Context, hp *HostPlan) {
	if err := r.deployHost(ctx, hp); err != nil {
		r.fail(hp.Host, err)
		if errors.Is(err, ErrUnhealthy) {
			r.healthFailure.Store(true)
		}
	}
}

// removeUnstarted removes the containers created for a start that never
// came.
func (r *applyRun) removeUnstarted(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	r.mu.Lock()
	left := map[string]*created{}
	for k, c := range r.created {
		if !c.started && c.id != "" {
			left[k] = c
		}
	}
	r.mu.Unlock()
	for k, c := range left {
		host, _, _ := strings.Cut(k, "\x00")
		if err := r.removeContainer(ctx, host, c.id); err != nil {
			r.log.Warn("remove a container that was never started", "host", host, "container", c.id, "err", err)
			continue
		}
		r.unrename(ctx, host, c)
	}
}

// unrename gives the container that create renamed away its name back.
func (r *applyRun) unrename(ctx context.Context, host string, c *created) {
	if c.clash == "" {
		return
	}
	if err := r.renameContainer(ctx, host, c.clash, c.name); err != nil {
		r.log.Warn("rename a replaced container back", "host", host, "container", c.clash, "name", c.name, "err", err)
	}
}

// hasPrimaryDeploy reports whether hp deploys the primary role (a host has
// at most one deploy step per role).
func (r *applyRun) hasPrimaryDeploy(hp *HostPlan) bool {
	return slices.ContainsFunc(hp.Steps, func(s Step) bool { return s.Kind == StepDeploy && s.Role == r.a.Config.PrimaryRole })
}

// primaryFirst orders hosts deploying the primary role first (stable), so
// the first boot group can open the barrier (Kamal: "primary hosts and
// roles are returned first").
func (r *applyRun) primaryFirst(hps []*HostPlan) []*HostPlan {
	rank := func(hp *HostPlan) int {
		if r.hasPrimaryDeploy(hp) {
			return 0
		}
		return 1
	}
	out := slices.Clone(hps)
	slices.SortStableFunc(out, func(x, y *HostPlan) int { return rank(x) - rank(y) })
	return out
}

// countPrimaries adds the primary-role deploys of a boot group about to
// start to those the barrier waits on; with none left anywhere, the
// barrier opens.
func (r *applyRun) countPrimaries(g []*HostPlan) {
	r.mu.Lock()
	for _, hp := range g {
		if r.hasPrimaryDeploy(hp) {
			r.primaryLeft++
		}
	}
	left := r.primaryLeft
	r.mu.Unlock()
	if left == 0 {
		r.openBarrier(nil)
	}
}

// primariesGone counts the primary-role deploy of a host that will not
// start as finished.
func (r *applyRun) primariesGone(hp *HostPlan) {
	if r.hasPrimaryDeploy(hp) {
		r.primaryFinished()
	}
}

// waitBarrier waits for the barrier without holding a slot, so that the
// primary-role hosts it waits for can run. It returns the barrier's
// verdict.
func (r *applyRun) waitBarrier(ctx context.Context) error {
	select {
	case <-r.barrier:
		return r.barrierErr
	default:
	}
	<-r.slots
	defer func() { r.slots <- struct{}{} }()
	select {
	case <-r.barrier:
		return r.barrierErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// primaryFinished counts a finished primary-role deploy; when none is left
// and none was healthy, the other roles give up (not a health failure).
func (r *applyRun) primaryFinished() {
	r.mu.Lock()
	r.primaryLeft--
	left := r.primaryLeft
	r.mu.Unlock()
	if left <= 0 {
		r.openBarrier(fmt.Errorf("%w: no primary-role container could be booted", ErrHost))
	}
}

func (r *applyRun) openBarrier(err error) {
	r.barrierOnce.Do(func() {
		r.barrierErr = err
		close(r.barrier)
	})
}

// bootGroups slices hosts by boot.limit ("N" hosts or "N%").
func bootGroups(hosts []*HostPlan, limit string) [][]*HostPlan {
	n := len(hosts)
	if limit != "" && n > 0 {
		if strings.HasSuffix(limit, "%") {
			if p, err := strconv.Atoi(strings.TrimSuffix(limit, "%")); err == nil && p > 0 {
				n = max(1, len(hosts)*p/100)
			}
		} else if v, err := strconv.Atoi(limit); err == nil && v > 0 {
			n = v
		}
	}
	var out [][]*HostPlan
	for len(hosts) > 0 {
		k := min(n, len(hosts))
		out = append(out, hosts[:k])
		hosts = hosts[k:]
	}
	return out
}

// deployHost boots every role deploy of a host, primary role first.
func (r *applyRun) deployHost(ctx context.Context, hp *HostPlan) error {
	var steps []Step
	for _, s := range hp.Steps {
		if s.Kind == StepDeploy {
			steps = append(steps, s)
		}
	}
	primary := r.a.Config.PrimaryRole
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].Role == primary && steps[j].Role != primary })
	for _, s := range hp.Steps {
		if s.Kind == StepReassert {
			steps = append(steps, s)
		}
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.Kind == StepReassert {
			if err := r.reassert(ctx, hp, s); err != nil {
				return err
			}
			continue
		}
		var waited time.Duration
		if s.Role != primary {
			w0 := r.a.now()
			err := r.waitBarrier(ctx)
			waited = r.a.now().Sub(w0)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("%s on %s not booted: %w", s.Role, hp.Host, err)
			}
		}
		// A step in flight finishes even when ctx is cancelled (SIGTERM):
		// a host is never left half-switched.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.stepTimeout())
		err := r.deployRole(sctx, hp, s, waited)
		cancel()
		if s.Role == primary {
			r.primaryFinished()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// reassert points a route back at the container that should serve it.
func (r *applyRun) reassert(ctx context.Context, hp *HostPlan, s Step) (err error) {
	a := r.a
	sr := &StepResult{Step: s, Start: a.now()}
	defer func() {
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
	}()
	route, ok := a.Route(s.Role)
	if !ok || s.spec.Proxy == nil {
		return nil
	}
	if err := r.proxyReady(ctx, hp.Host); err != nil {
		return err
	}
	c, err := r.inspectContainer(ctx, hp.Host, s.Container)
	if err != nil {
		return fmt.Errorf("%w: inspect %s: %w", ErrHost, s.Container, err)
	}
	if _, err := a.Proxy.Reassert(ctx, hp.Host, []proxy.Deployment{{Route: route, Target: c.target(s.spec.Proxy.AppPort)}}); err != nil {
		return fmt.Errorf("%w: route %s to %s: %w", ErrHost, route.Name(), s.Container, err)
	}
	return nil
}

func (r *applyRun) stepTimeout() time.Duration {
	c := r.a.Config
	return time.Duration(c.DeployTimeout+c.DrainTimeout+c.ReadinessDelay)*time.Second + 2*time.Minute
}

// createFor creates step s's container on hp ahead of its start and keeps
// it for deployRole; a failure is recorded as the step's.
func (r *applyRun) createFor(ctx context.Context, hp *HostPlan, s Step) error {
	c, err := r.create(ctx, hp, s)
	if err != nil {
		if c.id == "" {
			// The name may have been moved away before create failed.
			r.unrename(context.WithoutCancel(ctx), hp.Host, c)
		}
		sr := &StepResult{Step: s, Start: c.start, End: r.a.now(), Error: err.Error(), Phases: map[string]time.Duration{"create": c.took}}
		r.record(hp.Host, sr)
		return err
	}
	r.mu.Lock()
	r.created[createKey(hp.Host, s.Role)] = c
	r.mu.Unlock()
	failpoint.Hit(FailAfterCreate)
	return nil
}
