package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// login logs host in to deploy.yml's registry (password on stdin), once
// per apply, before a proxy or accessory image is run there: the app image
// is pulled through the API with its own credentials, which leaves no
// login behind, and Kamal logs in before booting those too.
func (r *applyRun) login(ctx context.Context, hp *HostPlan) error {
	reg := r.a.Config.Registry
	user := reg.Username.Reveal()
	if user == "" || reg.Local() {
		return nil
	}
	if !slices.ContainsFunc(hp.Steps, func(s Step) bool {
		return s.Kind == StepBootProxy || s.Kind == StepBootAccessory || s.Kind == StepRebootAccessory
	}) {
		return nil
	}
	if _, done := r.logins.LoadOrStore(hp.Host, true); done {
		return nil
	}
	argv := []string{"sh", "-c", `docker login "$1" -u "$2" --password-stdin >/dev/null`, "sh", reg.Server, user}
	if _, err := r.a.SSH.Run(ctx, hp.Host, argv, strings.NewReader(reg.Password.Reveal())); err != nil {
		r.logins.Delete(hp.Host)
		return fmt.Errorf("%w: registry login: %w", ErrHost, err)
	}
	return nil
}

// ensureNetwork creates the app network on a host that lacks it (once per
// apply).
// networkScript creates the network $1 unless it exists. Docker lets two
// concurrent creates of one name both succeed, and a name that two
// networks share is then refused by every later run ("ambiguous"): several
// apps deploying to a fresh host at once (one daemon, or replicas) would
// do just that. So the check and the create run under a lock directory in
// ~/.kamal, waited on for up to 10 s (a lock left by a killed run is
// stale, and then ignored).
const networkScript = `mkdir -p .kamal; lock=".kamal/network-$1.lock" n=0
until mkdir "$lock" 2>/dev/null; do n=$((n+1)); [ $n -ge 100 ] && break; sleep 0.1; done
trap 'rmdir "$lock" 2>/dev/null' EXIT
docker network inspect "$1" >/dev/null 2>&1 || docker network create "$1" 2>&1`

func (r *applyRun) ensureNetwork(ctx context.Context, hp *HostPlan) error {
	if hp.observed.onNetwork(hp.desired.Network) {
		return nil
	}
	if _, done := r.networks.LoadOrStore(hp.Host, true); done {
		return nil
	}
	out, err := r.a.SSH.Run(ctx, hp.Host, []string{"sh", "-c", networkScript, "sh", hp.desired.Network}, nil)
	if err != nil {
		r.networks.Delete(hp.Host)
		return fmt.Errorf("%w: docker network create %s: %w: %s", ErrHost, hp.desired.Network, err, out)
	}
	return nil
}

// connect attaches the running containers the plan found off the network
// (StepConnect) back to it; a route to one is reasserted later (the plan
// holds a StepReassert for it), since it comes back at a new address.
func (r *applyRun) connect(ctx context.Context, hp *HostPlan) error {
	for _, s := range hp.Steps {
		if s.Kind != StepConnect {
			continue
		}
		sr := &StepResult{Step: s, Start: r.a.now()}
		out, err := r.a.SSH.Run(ctx, hp.Host, []string{"docker", "network", "connect", hp.desired.Network, s.Container}, nil)
		sr.End = r.a.now()
		if err != nil {
			err = fmt.Errorf("%w: docker network connect %s %s: %w: %s", ErrHost, hp.desired.Network, s.Container, err, out)
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
		if err != nil {
			return err
		}
	}
	return nil
}

// prepare makes the network and boots the proxy (in the background) on a
// host, and with precreate creates its app containers, to be started
// later.
func (r *applyRun) prepare(ctx context.Context, hp *HostPlan, precreate bool) error {
	a := r.a
	host := hp.Host
	if err := r.ensureNetwork(ctx, hp); err != nil {
		return err
	}
	if err := r.connect(ctx, hp); err != nil {
		return err
	}
	if err := r.login(ctx, hp); err != nil {
		return err
	}
	if a.routed(hp.desired) && a.Proxy != nil {
		// The proxy boots while the new containers start: only a switch
		// needs it (proxyReady).
		pb := &proxyBoot{done: make(chan struct{})}
		r.mu.Lock()
		r.proxyBoot[host] = pb
		r.mu.Unlock()
		go func() {
			defer close(pb.done)
			start := a.now()
			err := a.Proxy.Boot(context.WithoutCancel(ctx), host, a.routesOn(hp.desired))
			for _, s := range hp.Steps {
				if s.Kind == StepBootProxy {
					sr := &StepResult{Step: s, Start: start, End: a.now()}
					if err != nil {
						sr.Error = err.Error()
					}
					r.record(host, sr)
				}
			}
			if err != nil {
				pb.err = fmt.Errorf("%w: boot proxy: %w", ErrHost, err)
				r.fail(host, pb.err)
			}
		}()
	}
	for _, s := range hp.Steps {
		if !precreate || s.Kind != StepDeploy {
			continue
		}
		if err := r.createFor(ctx, hp, s); err != nil {
			return err
		}
	}
	return nil
}

// proxyBoot is a proxy boot in flight; err is set before done closes.
type proxyBoot struct {
	done chan struct{}
	err  error
}

// waitProxyBoots waits for every proxy boot started by prepare.
func (r *applyRun) waitProxyBoots() {
	r.mu.Lock()
	boots := make([]*proxyBoot, 0, len(r.proxyBoot))
	for _, pb := range r.proxyBoot {
		boots = append(boots, pb)
	}
	r.mu.Unlock()
	for _, pb := range boots {
		<-pb.done
	}
}

// proxyReady waits for host's proxy boot (if one was started) and returns
// its error.
func (r *applyRun) proxyReady(ctx context.Context, host string) error {
	r.mu.Lock()
	pb := r.proxyBoot[host]
	r.mu.Unlock()
	if pb == nil {
		return nil
	}
	select {
	case <-pb.done:
		return pb.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
