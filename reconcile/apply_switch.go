package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/capstan-dev/capstan/internal/failpoint"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// switched is a role on a host that now runs the new container, kept to
// switch back after a later failure.
type switched struct {
	host  string
	spec  *kamal.Container
	route *proxy.Route
	old   *liveContainer // nil when nothing ran before
	new   *liveContainer
}

// liveContainer is a container as apply handles it.
type liveContainer struct {
	ID   string // full ID
	Name string
	IP   string // on the kamal network
}

func (c *liveContainer) target(port int) proxy.Target {
	t := proxy.Target{Container: c.ID[:min(12, len(c.ID))], Port: port}
	if ip, err := netip.ParseAddr(c.IP); err == nil {
		t.IP = ip
	}
	return t
}

// roleDeploy is one role's deploy on one host, as deployRole takes it
// through its phases.
type roleDeploy struct {
	host string
	s    Step
	spec *kamal.Container
	c    *created
	old  *liveContainer // serving before (as observed), nil when none
	new  *liveContainer // set by startNew
	// started is when the new container's start returned.
	started time.Time
	// route is the role's route; viaProxy when the proxy switches it (so
	// it health-checks the new container), else Docker judges it.
	route    proxy.Route
	proxied  bool
	viaProxy bool
	sr       *StepResult
	log      *slog.Logger
}

// phase records how long the phase name took since since.
func (d *roleDeploy) phase(a *App, name string, since time.Time) {
	d.sr.Phases[name] = a.now().Sub(since)
}

// deployRole starts the new container of one role on one host (created by
// prepare, or now), waits for it to be healthy, switches traffic and stops
// the old container. waited is how long it waited at the barrier. The step
// is recorded with its phases, unless creating the container failed (then
// createFor recorded it).
func (r *applyRun) deployRole(ctx context.Context, hp *HostPlan, s Step, waited time.Duration) (err error) {
	a := r.a
	c, err := r.createdFor(ctx, hp, s)
	if err != nil {
		return err
	}
	d := &roleDeploy{host: hp.Host, s: s, spec: s.spec, c: c, old: serving(hp, s, c),
		sr:  &StepResult{Step: s, Start: c.start, Phases: map[string]time.Duration{"create": c.took}},
		log: r.log.With("host", hp.Host, "role", s.Role)}
	d.route, d.proxied = a.Route(s.Role)
	d.viaProxy = d.proxied && d.spec.Proxy != nil && a.Proxy != nil
	if waited > 0 {
		d.sr.Phases["wait"] = waited
	}
	defer func() {
		d.sr.End = a.now()
		if err != nil {
			d.sr.Error = err.Error()
		}
		r.record(d.host, d.sr)
	}()
	if err := r.startNew(ctx, d); err != nil {
		return err
	}
	t1 := a.now()
	err = r.healthyAndSwitch(ctx, d)
	d.phase(a, "healthy+switch", t1)
	r.barrierVerdict(s.Role, err)
	if err != nil {
		return r.abandonNew(ctx, d, err)
	}
	d.sr.Switched = a.now()
	if err := r.bake(ctx, d); err != nil {
		return r.abandonNew(ctx, d, err)
	}
	sw := switched{host: d.host, spec: d.spec, old: d.old, new: d.new}
	if d.proxied {
		sw.route = &d.route
	}
	r.mu.Lock()
	r.switched = append(r.switched, sw)
	r.mu.Unlock()
	failpoint.Hit(FailAfterSwitch)
	if err := r.stopOld(ctx, d); err != nil {
		return err
	}
	d.log.Info("deployed", "container", d.spec.Name, "from", s.From, "took", a.now().Sub(d.sr.Start).Round(time.Millisecond))
	return nil
}

// createdFor returns the container created for step s on hp ahead of its
// start, creating it now when prepare did not (createFor).
func (r *applyRun) createdFor(ctx context.Context, hp *HostPlan, s Step) (*created, error) {
	key := createKey(hp.Host, s.Role)
	r.mu.Lock()
	c := r.created[key]
	r.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if err := r.createFor(ctx, hp, s); err != nil {
		return nil, err
	}
	r.mu.Lock()
	c = r.created[key]
	r.mu.Unlock()
	return c, nil
}

// serving returns the container serving s's role now (as observed), nil
// when none; create renamed it if it held the new name.
func serving(hp *HostPlan, s Step, c *created) *liveContainer {
	o := hp.observed.byName(s.From)
	if s.From == "" || o == nil {
		return nil
	}
	old := &liveContainer{ID: o.ID, Name: o.Name}
	if o.ID == c.clash {
		old.Name = c.renamed
	}
	return old
}

// startNew starts the created container, once its boot is in the audit
// log, and sets d.new and d.started. A container that fails to start is
// left unstarted: removed at the end, the replaced name given back.
func (r *applyRun) startNew(ctx context.Context, d *roleDeploy) error {
	a := r.a
	t0 := a.now()
	if d.c.audited != nil {
		select {
		case <-d.c.audited:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	nw, err := r.startContainer(ctx, d.host, d.c.id)
	if err != nil {
		return fmt.Errorf("%w: start %s: %w", ErrHost, d.spec.Name, err)
	}
	r.mu.Lock()
	d.c.started = true // from here on a failure stops it rather than removes it
	r.mu.Unlock()
	d.started = a.now()
	d.new = nw
	d.phase(a, "start", t0)
	failpoint.Hit(FailAfterStart)
	return nil
}

// healthyAndSwitch waits for the new container to be healthy, then
// switches the route to it (through the proxy, which health-checks it, the
// container watched meanwhile), or, for a role without a proxy, has Docker
// judge it (waitReady).
func (r *applyRun) healthyAndSwitch(ctx context.Context, d *roleDeploy) error {
	a := r.a
	if !d.viaProxy {
		return r.waitReady(ctx, d.host, d.new.ID, d.started)
	}
	var from proxy.Target
	if d.old != nil {
		from = d.old.target(d.spec.Proxy.AppPort)
	}
	if err := r.proxyReady(ctx, d.host); err != nil {
		return err
	}
	return r.watchWhile(ctx, d.host, d.new.ID, func(ctx context.Context) error {
		return a.Proxy.Switch(ctx, d.host, d.route, from, d.new.target(d.spec.Proxy.AppPort))
	})
}

// bake watches the new container for x-capstan.bake seconds after it took
// the traffic, while the old one still runs: a container that exits or
// restarts in that time fails the deploy (abandonNew then gives the
// traffic back to the old one). A release that crashes soon after it
// starts serving is caught here, not by drift after the old one is gone.
func (r *applyRun) bake(ctx context.Context, d *roleDeploy) error {
	n := r.a.Config.Capstan.Bake
	if n <= 0 {
		return nil
	}
	t0 := r.a.now()
	end := t0.Add(time.Duration(n) * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := r.state(ctx, d.host, d.new.ID); err == nil {
			if cerr := st.crashed(); cerr != nil {
				return fmt.Errorf("%w, %s after it took the traffic", cerr, r.a.now().Sub(t0).Round(100*time.Millisecond))
			}
		}
		if !r.a.now().Before(end) {
			d.phase(r.a, "bake", t0)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// barrierVerdict opens the barrier on a primary-role deploy's outcome
// err: the first healthy primary container lets the other roles boot; the
// first unhealthy one stops them (Kamal's barrier). A host that fails for
// another reason (connection lost) decides nothing.
func (r *applyRun) barrierVerdict(role string, err error) {
	if role != r.a.Config.PrimaryRole {
		return
	}
	switch {
	case err == nil:
		r.openBarrier(nil)
	case errors.Is(err, proxy.ErrUnhealthy) || errors.Is(err, ErrUnhealthy):
		r.openBarrier(fmt.Errorf("%w: %w", ErrBarrier, err))
	}
}

// abandonNew handles a new container that failed (err) to become healthy
// or take the traffic: it gives the traffic back to the old container
// (first: requests fail until then), stops the new one, keeps its logs,
// and returns err wrapped in ErrUnhealthy for a health failure, else in
// ErrHost.
func (r *applyRun) abandonNew(ctx context.Context, d *roleDeploy, err error) error {
	if d.viaProxy && d.old != nil && !errors.Is(err, proxy.ErrUnhealthy) {
		// The new container may have taken the traffic before it
		// failed (a crash during the drain or the bake): give it back
		// to the old one before the new one stops. A no-op if it never
		// moved.
		r.switchBack(context.WithoutCancel(ctx), d.host, d.route, d.spec.Proxy.AppPort, d.new, d.old.ID)
	}
	_ = r.stopContainer(context.WithoutCancel(ctx), d.host, d.spec, d.new.ID)
	d.sr.Logs = r.containerLogs(d.host, d.new.ID)
	d.log.Error("new container failed; old one keeps serving", "container", d.spec.Name, "err", err)
	if errors.Is(err, proxy.ErrUnhealthy) || errors.Is(err, ErrUnhealthy) {
		return fmt.Errorf("%w: %s on %s: %w", ErrUnhealthy, d.spec.Name, d.host, err)
	}
	return fmt.Errorf("%w: switch %s on %s: %w", ErrHost, d.spec.Name, d.host, err)
}

// stopOld stops the old container only now that traffic left it, and the
// one that held the new name if it was not the old one (a boot interrupted
// by a crash may have started it after it was observed).
func (r *applyRun) stopOld(ctx context.Context, d *roleDeploy) error {
	t2 := r.a.now()
	if d.old != nil {
		if err := r.stopContainer(ctx, d.host, d.spec, d.old.ID); err != nil {
			return fmt.Errorf("%w: stop %s: %w", ErrHost, d.old.Name, err)
		}
	}
	if d.c.clash != "" && (d.old == nil || d.c.clash != d.old.ID) {
		if err := r.stopContainer(ctx, d.host, d.spec, d.c.clash); err != nil {
			return fmt.Errorf("%w: stop replaced %s: %w", ErrHost, d.spec.Name, err)
		}
	}
	d.phase(r.a, "stop", t2)
	return nil
}

// switchBack routes route on host to the container oldID again.
func (r *applyRun) switchBack(ctx context.Context, host string, route proxy.Route, port int, from *liveContainer, oldID string) {
	old, err := r.inspectContainer(ctx, host, oldID)
	if err == nil {
		err = r.a.Proxy.Switch(ctx, host, route, from.target(port), old.target(port))
	}
	if err != nil {
		r.log.Error("switch back to the old container", "host", host, "route", route.Name(), "container", oldID, "err", err)
	}
}

func (r *applyRun) stopArgv(spec *kamal.Container, id string) []string {
	if spec.StopTimeout != nil {
		return []string{"docker", "stop", "-t", strconv.Itoa(*spec.StopTimeout), id}
	}
	return []string{"docker", "stop", id}
}

// crashed reports a container that exited or keeps restarting.
func (st containerState) crashed() error {
	switch {
	case st.Status == "exited" || st.Status == "dead":
		return fmt.Errorf("%w: container %s with code %d", ErrUnhealthy, st.Status, st.ExitCode)
	case st.Status == "restarting" || st.RestartCount > 0:
		return fmt.Errorf("%w: container restarting (%d restarts)", ErrUnhealthy, st.RestartCount)
	case st.Health == "unhealthy":
		return fmt.Errorf("%w: docker health check unhealthy", ErrUnhealthy)
	}
	return nil
}

// watchWhile runs f (the proxy switch, which health-checks the container)
// while polling the container; a container that exits or restarts fails
// the deploy at once instead of after deploy_timeout.
func (r *applyRun) watchWhile(ctx context.Context, host, id string, f func(context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- f(fctx) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil && context.Cause(fctx) != nil && !errors.Is(context.Cause(fctx), context.Canceled) {
				return context.Cause(fctx)
			}
			return err
		case <-tick.C:
			st, err := r.state(ctx, host, id)
			if err != nil {
				continue
			}
			if cerr := st.crashed(); cerr != nil {
				cancel(cerr)
				<-done
				return cerr
			}
		}
	}
}

// waitReady judges a non-proxied container by Docker, as Kamal does:
// healthy passes; running passes once readiness_delay has passed since it
// started and a re-check still finds it running; exited or restarting
// fails at once; otherwise up to deploy_timeout. started is when the start
// returned (the container was running then).
func (r *applyRun) waitReady(ctx context.Context, host, id string, started time.Time) error {
	c := r.a.Config
	delay := time.Duration(c.ReadinessDelay) * time.Second
	deadline := started.Add(time.Duration(c.DeployTimeout) * time.Second)
	for {
		st, err := r.state(ctx, host, id)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrHost, err)
		}
		if err := st.crashed(); err != nil {
			return err
		}
		now := r.a.now()
		switch {
		case st.Health == "healthy":
			return nil
		case st.Health == "" && st.Status == "running" && now.Sub(started) >= delay:
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("%w: not ready within deploy_timeout %ds (state %s, health %q)", ErrUnhealthy, c.DeployTimeout, st.Status, st.Health)
		}
		// Poll often enough to catch a crash early, and re-check right
		// when readiness_delay is over.
		wait := 250 * time.Millisecond
		if left := started.Add(delay).Sub(now); st.Health == "" && left > 0 && left < wait {
			wait = left
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// containerLogs returns the last lines a failed container printed.
func (r *applyRun) containerLogs(host, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := r.a.SSH.Run(ctx, host, []string{"sh", "-c", `docker logs --tail 30 --timestamps "$1" 2>&1`, "sh", id}, nil)
	if err != nil {
		return ""
	}
	return r.redact(string(out))
}

// rollback switches every host that took the new version back to the
// container it ran before, newest switch first.
func (r *applyRun) rollback(ctx context.Context) {
	a := r.a
	r.mu.Lock()
	sw := append([]switched(nil), r.switched...)
	r.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	for i := len(sw) - 1; i >= 0; i-- {
		s := sw[i]
		if s.old == nil {
			continue // nothing ran before; leave the new one serving
		}
		log := r.log.With("host", s.host, "role", s.spec.Role)
		old, err := r.startContainer(ctx, s.host, s.old.ID)
		if err != nil {
			log.Error("rollback: start old container", "err", err)
			r.fail(s.host, fmt.Errorf("rollback failed: start %s: %w", s.old.Name, err))
			continue
		}
		if s.route != nil {
			err = a.Proxy.Switch(ctx, s.host, *s.route, s.new.target(s.spec.Proxy.AppPort), old.target(s.spec.Proxy.AppPort))
		}
		if err == nil {
			err = r.stopContainer(ctx, s.host, s.spec, s.new.ID)
		}
		if err != nil {
			log.Error("rollback", "err", err)
			r.fail(s.host, fmt.Errorf("rollback failed: %w", err))
			continue
		}
		r.fail(s.host, fmt.Errorf("%w (%s) after another host failed", ErrRolledBack, s.old.Name))
		r.mu.Lock()
		r.res.RolledBack = append(r.res.RolledBack, s.host)
		r.mu.Unlock()
		r.audit(ctx, s.host, s.spec.Role, "Rolled back to "+s.old.Name+" after a failed deploy of "+a.Config.Version.Name())
	}
}
