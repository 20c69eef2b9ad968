package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

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

// deployRole starts the new container of one role on one host (created by
// prepare, or now), waits for it to be healthy, switches traffic and stops
// the old container.
func (r *applyRun) deployRole(ctx context.Context, hp *HostPlan, s Step, waited time.Duration) (err error) {
	a := r.a
	host, spec := hp.Host, s.spec
	r.mu.Lock()
	c := r.created[createKey(host, s.Role)]
	r.mu.Unlock()
	if c == nil {
		if err := r.createFor(ctx, hp, s); err != nil {
			return err
		}
		r.mu.Lock()
		c = r.created[createKey(host, s.Role)]
		r.mu.Unlock()
	}
	sr := &StepResult{Step: s, Start: c.start, Phases: map[string]time.Duration{"create": c.took}}
	if waited > 0 {
		sr.Phases["wait"] = waited
	}
	defer func() {
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(host, sr)
	}()
	phase := func(name string, since time.Time) { sr.Phases[name] = a.now().Sub(since) }
	log := r.log.With("host", host, "role", s.Role)

	// The container serving now (as observed); it was renamed by create
	// if it held the new name.
	var old *liveContainer
	if o := hp.observed.byName(s.From); s.From != "" && o != nil {
		old = &liveContainer{ID: o.ID, Name: o.Name}
		if o.ID == c.clash {
			old.Name = c.renamed
		}
	}
	r.audit(ctx, host, s.Role, "Booted app version "+a.Config.Version.Name())
	t0 := a.now()
	nw, err := r.startContainer(ctx, host, c.id)
	if err != nil {
		// Left unstarted: removed at the end, the replaced name given back.
		return fmt.Errorf("%w: start %s: %w", ErrHost, spec.Name, err)
	}
	r.mu.Lock()
	c.started = true // from here on a failure stops it rather than removes it
	r.mu.Unlock()
	started := a.now()
	id := nw.ID
	phase("start", t0)

	// Healthy, then switch (proxied) or judged by Docker (not proxied).
	t1 := a.now()
	route, proxied := a.Route(s.Role)
	if proxied && spec.Proxy != nil && a.Proxy != nil {
		var from proxy.Target
		if old != nil {
			from = old.target(spec.Proxy.AppPort)
		}
		err = r.proxyReady(ctx, host)
		if err == nil {
			err = r.watchWhile(ctx, host, id, func(ctx context.Context) error {
				return a.Proxy.Switch(ctx, host, route, from, nw.target(spec.Proxy.AppPort))
			})
		}
	} else {
		err = r.waitReady(ctx, host, id, started)
	}
	phase("healthy+switch", t1)
	// The first healthy primary container lets the other roles boot; the
	// first unhealthy one stops them (Kamal's barrier). A host that fails
	// for another reason (connection lost) decides nothing.
	if s.Role == a.Config.PrimaryRole {
		switch {
		case err == nil:
			r.openBarrier(nil)
		case errors.Is(err, proxy.ErrUnhealthy) || errors.Is(err, ErrUnhealthy):
			r.openBarrier(fmt.Errorf("%w: %w", ErrBarrier, err))
		}
	}
	if err != nil {
		sr.Logs = r.containerLogs(host, id)
		if proxied && spec.Proxy != nil && a.Proxy != nil && old != nil && !errors.Is(err, proxy.ErrUnhealthy) {
			// The new container may have taken the traffic before it
			// failed (a crash during the drain): give it back to the old
			// one before the new one stops. A no-op if it never moved.
			r.switchBack(context.WithoutCancel(ctx), host, route, spec.Proxy.AppPort, nw, old.ID)
		}
		_ = r.stopContainer(context.WithoutCancel(ctx), host, spec, id)
		log.Error("new container failed; old one keeps serving", "container", spec.Name, "err", err)
		if errors.Is(err, proxy.ErrUnhealthy) || errors.Is(err, ErrUnhealthy) {
			return fmt.Errorf("%w: %s on %s: %w", ErrUnhealthy, spec.Name, host, err)
		}
		return fmt.Errorf("%w: switch %s on %s: %w", ErrHost, spec.Name, host, err)
	}
	sr.Switched = a.now()
	sw := switched{host: host, spec: spec, old: old, new: nw}
	if proxied {
		sw.route = &route
	}
	r.mu.Lock()
	r.switched = append(r.switched, sw)
	r.mu.Unlock()

	// Stop the old container only now that traffic left it, and the one
	// that held the new name if it was not the old one (a boot interrupted
	// by a crash may have started it after it was observed).
	t2 := a.now()
	if old != nil {
		if err := r.stopContainer(ctx, host, spec, old.ID); err != nil {
			return fmt.Errorf("%w: stop %s: %w", ErrHost, old.Name, err)
		}
	}
	if c.clash != "" && (old == nil || c.clash != old.ID) {
		if err := r.stopContainer(ctx, host, spec, c.clash); err != nil {
			return fmt.Errorf("%w: stop replaced %s: %w", ErrHost, spec.Name, err)
		}
	}
	phase("stop", t2)
	log.Info("deployed", "container", spec.Name, "from", s.From, "took", a.now().Sub(sr.Start).Round(time.Millisecond))
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
	if r.a.Redact != nil {
		return r.a.Redact(string(out))
	}
	return string(out)
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
