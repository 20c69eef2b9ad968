package kamalproxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Driver is the kamal-proxy proxy.Driver. It only runs commands through
// Runner; it keeps no state of its own (kamal-proxy persists its routes in
// the kamal-proxy-config volume).
type Driver struct {
	runner   proxy.Runner
	settings Settings
}

var _ proxy.Driver = (*Driver)(nil)

// New returns a Driver running commands through r. Errors wrap
// proxy.ErrInvalid when the settings are invalid.
func New(r proxy.Runner, s Settings) (*Driver, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: nil runner", proxy.ErrInvalid)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &Driver{runner: r, settings: s.withDefaults()}, nil
}

// Boot checks the version of an existing proxy container (older than
// MinimumVersion: ErrProxyVersion, reboot by hand as with Kamal) and is
// done when it runs: one command on every deploy after the first. Else it
// creates the kamal network and starts the container, or runs a new one
// with RunArgs, as Kamal does. Like Kamal it never replaces a running
// proxy. routes are only validated: kamal-proxy learns a route at its
// first deploy.
func (d *Driver) Boot(ctx context.Context, host string, routes []proxy.Route) error {
	for _, r := range routes {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("boot kamal-proxy on %s: route %s: %w", host, r.Name(), err)
		}
	}
	if running, image, ok := d.state(ctx, host); ok {
		if err := checkVersion(image); err != nil {
			return fmt.Errorf("boot kamal-proxy on %s: %w", host, err)
		}
		if running {
			return nil
		}
	}
	if _, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, NetworkArgs(d.settings), nil); err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("boot kamal-proxy on %s: create network: %w", host, err)
	}
	if _, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, MkdirArgs(d.settings), nil); err != nil {
		return fmt.Errorf("boot kamal-proxy on %s: %w", host, err)
	}
	_, startErr := proxy.RunWithTimeout(ctx, d.runner, 0, host, StartArgs(d.settings), nil)
	if startErr == nil {
		return nil
	}
	if _, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, RunArgs(d.settings), nil); err != nil {
		// Another app deploying to this host (or Kamal) ran it first: the
		// name is taken. Its proxy serves every app; check it runs.
		if strings.Contains(err.Error(), "is already in use") {
			if running, _, _ := d.state(ctx, host); running {
				return nil
			}
		}
		return fmt.Errorf("boot kamal-proxy on %s: %w", host, errors.Join(startErr, err))
	}
	return nil
}

// state reports whether the proxy container on host runs, and its image;
// ok is false when there is none (or it cannot be inspected).
func (d *Driver) state(ctx context.Context, host string) (running bool, image string, ok bool) {
	out, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, StateArgs(d.settings), nil)
	if err != nil {
		return false, "", false
	}
	r, image, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return r == "true", image, true
}

// deployTimeout bounds a `kamal-proxy deploy`: the RPC has no client-side
// timeout and may take the deploy timeout plus the drain timeout.
func deployTimeout(o proxy.Options) time.Duration {
	o = o.WithDefaults()
	return o.DeployTimeout + o.DrainTimeout + proxy.DefaultCommandTimeout
}

// checkVersion compares the tag of image with MinimumVersion. Tags that are
// not vX.Y.Z are accepted: nothing can be said about them.
func checkVersion(image string) error {
	tag := image[strings.LastIndex(image, ":")+1:]
	have, ok1 := parseVersion(tag)
	least, ok2 := parseVersion(MinimumVersion)
	if ok1 && ok2 && slices.Compare(have, least) < 0 {
		return fmt.Errorf("%w: running %s, need %s or newer (reboot the proxy)", proxy.ErrProxyVersion, image, MinimumVersion)
	}
	return nil
}

func parseVersion(s string) ([]int, bool) {
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return nil, false
	}
	v := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		v[i] = n
	}
	return v, true
}

// Switch runs `kamal-proxy deploy` for route with target to. kamal-proxy
// health-checks to, swaps it in and drains the old target before the call
// returns; from is not needed. A failed health check wraps
// proxy.ErrUnhealthy (traffic did not move), other failures
// proxy.ErrProxy.
func (d *Driver) Switch(ctx context.Context, host string, route proxy.Route, from, to proxy.Target) error {
	argv, err := DeployArgs(d.settings, route, to)
	if err != nil {
		return fmt.Errorf("switch %s on %s: %w", route.Name(), host, err)
	}
	if _, err := proxy.RunWithTimeout(ctx, d.runner, deployTimeout(route.Options), host, argv, nil); err != nil {
		return fmt.Errorf("switch %s on %s to %s: %w", route.Name(), host, to, classify(err))
	}
	return nil
}

// classify maps a failed kamal-proxy client call to a sentinel. The client
// prints "Error: <message>" on stderr; the Runner's error carries it.
func classify(err error) error {
	if strings.Contains(err.Error(), "target failed to become healthy") {
		return fmt.Errorf("%w: %w", proxy.ErrUnhealthy, err)
	}
	return fmt.Errorf("%w: %w", proxy.ErrProxy, err)
}

// Routes runs `kamal-proxy list` and parses it.
func (d *Driver) Routes(ctx context.Context, host string) ([]proxy.LiveRoute, error) {
	out, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, ListArgs(d.settings), nil)
	if err != nil {
		return nil, fmt.Errorf("list kamal-proxy routes on %s: %w", host, classify(err))
	}
	routes, err := ParseList(out)
	if err != nil {
		return nil, fmt.Errorf("list kamal-proxy routes on %s: %w", host, err)
	}
	return routes, nil
}

// Reassert lists the routes and deploys every stale one again (see Stale).
// The targets are running and healthy, so each deploy is quick. Failures of
// single routes are joined; the others are still attempted.
func (d *Driver) Reassert(ctx context.Context, host string, want []proxy.Deployment) ([]string, error) {
	out, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, ListArgs(d.settings), nil)
	if err != nil {
		return nil, fmt.Errorf("reassert routes on %s: %w", host, classify(err))
	}
	cmds, err := ReassertArgs(d.settings, out, want)
	if err != nil {
		return nil, fmt.Errorf("reassert routes on %s: %w", host, err)
	}
	var changed []string
	var errs []error
	for _, argv := range cmds {
		name := argv[5] // docker exec <container> kamal-proxy deploy <name>
		i := slices.IndexFunc(want, func(w proxy.Deployment) bool { return w.Route.Name() == name })
		if _, err := proxy.RunWithTimeout(ctx, d.runner, deployTimeout(want[i].Route.Options), host, argv, nil); err != nil {
			errs = append(errs, fmt.Errorf("reassert %s on %s: %w", name, host, classify(err)))
			continue
		}
		changed = append(changed, name)
	}
	return changed, errors.Join(errs...)
}

// Remove runs `kamal-proxy remove name` when the proxy lists name.
func (d *Driver) Remove(ctx context.Context, host string, name string) error {
	if !proxy.ValidName(name) {
		return fmt.Errorf("remove route on %s: %w: name %q", host, proxy.ErrInvalid, name)
	}
	routes, err := d.Routes(ctx, host)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if !slices.ContainsFunc(routes, func(r proxy.LiveRoute) bool { return r.Name == name }) {
		return nil
	}
	if _, err := proxy.RunWithTimeout(ctx, d.runner, 0, host, RemoveArgs(d.settings, name), nil); err != nil {
		return fmt.Errorf("remove %s on %s: %w", name, host, classify(err))
	}
	return nil
}
