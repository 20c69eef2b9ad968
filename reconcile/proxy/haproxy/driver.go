package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Driver defaults.
const (
	DefaultContainer = "capstan-haproxy"
	// DefaultConfigDir holds haproxy.cfg on the host, bind-mounted
	// read-only at /etc/haproxy. The directory is mounted, not the file:
	// the file is replaced by rename, which a file bind mount would not
	// see. It lives under /root because that survives reboots and, in the
	// lab, is private to each host (/var/lib and /etc are shared there).
	DefaultConfigDir = "/root/.capstan/haproxy"
	// DefaultSocketDir is the root-only (0700) host directory bind-mounted
	// at /run/haproxy; capstan dials admin.sock in it over SSH.
	DefaultSocketDir  = "/run/capstan/haproxy"
	DefaultHTTPPort   = 80
	DefaultLogMaxSize = "10m"
	configFile        = "haproxy.cfg"
	socketFile        = "admin.sock"
	containerCfgDir   = "/etc/haproxy"
	containerSockDir  = "/run/haproxy"
	reloadWait        = 10 * time.Second
)

// Settings configure the HAProxy driver. Image is required; every other
// zero field takes its default.
type Settings struct {
	Image      string // e.g. "10.231.0.1:5000/haproxy:lab"
	Container  string // "" = DefaultContainer
	Network    string // "" = proxy.DefaultNetwork
	ConfigDir  string // host directory of haproxy.cfg; "" = DefaultConfigDir
	SocketDir  string // host directory of admin.sock; "" = DefaultSocketDir
	HTTPPort   int    // published host port; 0 = 80
	NoPublish  bool   // do not publish the port
	LogMaxSize string // "" = DefaultLogMaxSize

	// Config is the template for the rendered file: socket path as HAProxy
	// sees it, bind address and timeouts. Backends are ignored (they come
	// from the routes). Tests point Socket and Bind at a temp dir and
	// loopback; in a container leave them empty.
	Config Config
	// Client tunes the runtime API client kept per host.
	Client ClientOptions
	// Logger receives switch timings and cleanup warnings; nil discards.
	Logger *slog.Logger
}

func (s Settings) withDefaults() Settings {
	if s.Container == "" {
		s.Container = DefaultContainer
	}
	if s.Network == "" {
		s.Network = proxy.DefaultNetwork
	}
	if s.ConfigDir == "" {
		s.ConfigDir = DefaultConfigDir
	}
	if s.SocketDir == "" {
		s.SocketDir = DefaultSocketDir
	}
	if s.HTTPPort == 0 {
		s.HTTPPort = DefaultHTTPPort
	}
	if s.LogMaxSize == "" {
		s.LogMaxSize = DefaultLogMaxSize
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	return s
}

// Validate checks the settings. Errors wrap proxy.ErrInvalid.
func (s Settings) Validate() error {
	s = s.withDefaults()
	if s.Image == "" || strings.ContainsAny(s.Image, " \t\n") {
		return fmt.Errorf("%w: haproxy image %q", proxy.ErrInvalid, s.Image)
	}
	if !proxy.ValidName(s.Container) || !proxy.ValidName(s.Network) {
		return fmt.Errorf("%w: container %q / network %q", proxy.ErrInvalid, s.Container, s.Network)
	}
	for _, d := range []string{s.ConfigDir, s.SocketDir} {
		if !path.IsAbs(d) || path.Clean(d) != d || strings.ContainsAny(d, ": \t\n") {
			return fmt.Errorf("%w: directory %q must be a clean absolute path", proxy.ErrInvalid, d)
		}
	}
	if s.HTTPPort < 1 || s.HTTPPort > 65535 {
		return fmt.Errorf("%w: port %d", proxy.ErrInvalid, s.HTTPPort)
	}
	return s.Config.Validate()
}

// ConfigPath is haproxy.cfg on the host.
func (s Settings) ConfigPath() string { return path.Join(s.withDefaults().ConfigDir, configFile) }

// SocketPath is the stats socket on the host.
func (s Settings) SocketPath() string { return path.Join(s.withDefaults().SocketDir, socketFile) }

// RunArgs is the `docker run` of the HAProxy container: on the kamal
// network, restarted unless stopped, config directory read-only at
// /etc/haproxy, socket directory at /run/haproxy, SIGUSR1 (soft stop) to
// stop. The image's entrypoint is `haproxy -W -db -f /etc/haproxy/haproxy.cfg`.
func RunArgs(s Settings) []string {
	s = s.withDefaults()
	argv := []string{"docker", "run", "--name", s.Container, "--network", s.Network,
		"--detach", "--restart", "unless-stopped",
		"--volume", s.ConfigDir + ":" + containerCfgDir + ":ro",
		"--volume", s.SocketDir + ":" + containerSockDir}
	if !s.NoPublish {
		argv = append(argv, "--publish", strconv.Itoa(s.HTTPPort)+":80")
	}
	return append(argv, "--log-opt", "max-size="+s.LogMaxSize, "--stop-signal", "SIGUSR1", s.Image)
}

// The driver's other commands, pinned by golden tests.

// bootScript, run with argv container network config-dir socket-dir
// config-path, looks at the host in one round trip: it prints the
// container's state ("true", "false", or "missing"), creates the network
// unless the container runs (a running container's network exists), makes
// both directories 0700, then prints a marker line and the current
// configuration (nothing when there is none).
const bootScript = `name=$1 net=$2 cfgdir=$3 sockdir=$4 cfg=$5
state=$(docker container inspect --format '{{.State.Running}}' "$name" 2>/dev/null) || state=missing
if [ "$state" != true ]; then docker network create "$net" >/dev/null 2>&1 || docker network inspect "$net" >/dev/null || exit $?; fi
mkdir -p -m 700 "$cfgdir" "$sockdir" && chmod 700 "$cfgdir" "$sockdir" || exit $?
echo "$state"
echo ` + bootMarker + `
cat "$cfg" 2>/dev/null || true`

const bootMarker = "--capstan-haproxy-config--"

func bootArgs(s Settings) []string {
	return []string{"sh", "-c", bootScript, "sh", s.Container, s.Network, s.ConfigDir, s.SocketDir, s.ConfigPath()}
}

// parseBoot splits bootScript's output into the container state and the
// configuration.
func parseBoot(out []byte) (state string, cfg []byte, err error) {
	head, cfg, ok := bytes.Cut(out, []byte(bootMarker+"\n"))
	if !ok {
		return "", nil, fmt.Errorf("%w: unexpected boot output %q", proxy.ErrProxy, out[:min(len(out), 200)])
	}
	return strings.TrimSpace(string(head)), cfg, nil
}

func startArgs(s Settings) []string { return []string{"docker", "container", "start", s.Container} }
func reloadArgs(s Settings) []string {
	return []string{"docker", "kill", "--signal", "USR2", s.Container}
}
func catArgs(s Settings) []string { return []string{"cat", s.ConfigPath()} }

// writeArgs replaces the configuration with stdin atomically (a temporary
// file renamed into place).
func writeArgs(s Settings) []string {
	return []string{"sh", "-c", `cat > "$1.tmp" && mv -f -- "$1.tmp" "$1"`, "sh", s.ConfigPath()}
}

// ErrNotBooted means Switch or Remove came before Boot for the host in this
// process: the driver does not know the host's full set of routes, and
// rewriting the configuration without it would drop backends.
var ErrNotBooted = errors.New("haproxy driver: Boot the host first")

// Driver is the HAProxy proxy.Driver. It remembers, per host, the routes
// given to Boot (their Host rules are not visible through the runtime API)
// and keeps one runtime API channel per host.
type Driver struct {
	runner proxy.Runner
	dialer proxy.Dialer
	s      Settings

	mu    sync.Mutex
	hosts map[string]*hostState
}

type hostState struct {
	mu     sync.Mutex // one operation per host at a time
	booted bool       // routes holds the host's full set
	routes map[string]proxy.Route
	client *Client
}

var _ proxy.Driver = (*Driver)(nil)

// New returns a Driver that runs commands through r and reaches the stats
// socket and app containers through d. Errors wrap proxy.ErrInvalid.
func New(r proxy.Runner, d proxy.Dialer, s Settings) (*Driver, error) {
	if r == nil || d == nil {
		return nil, fmt.Errorf("%w: nil runner or dialer", proxy.ErrInvalid)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &Driver{runner: r, dialer: d, s: s.withDefaults(), hosts: map[string]*hostState{}}, nil
}

// Client returns the runtime API client of host (for observation and
// tests). It dials the stats socket through the Dialer on first use.
func (d *Driver) Client(host string) *Client { return d.host(host).client }

func (d *Driver) host(host string) *hostState {
	d.mu.Lock()
	defer d.mu.Unlock()
	hs, ok := d.hosts[host]
	if !ok {
		sock := d.s.SocketPath()
		hs = &hostState{routes: map[string]proxy.Route{}, client: NewClient(func(ctx context.Context) (net.Conn, error) {
			return d.dialer.Dial(ctx, host, "unix", sock)
		}, d.s.Client)}
		d.hosts[host] = hs
	}
	return hs
}

// checkRoute rejects what this driver cannot express.
func checkRoute(r proxy.Route) error {
	if err := r.Validate(); err != nil {
		return err
	}
	o := r.Options
	if o.TLS {
		return fmt.Errorf("%w: TLS (proxy.ssl)", proxy.ErrUnsupported)
	}
	for _, p := range o.PathPrefixes {
		if p != "/" {
			return fmt.Errorf("%w: path prefix %s", proxy.ErrUnsupported, p)
		}
	}
	return nil
}

// Boot makes sure the HAProxy container runs on host with a configuration
// for routes (the full set of routed roles on host; routes not in it are
// dropped). It creates the network and the two directories (mode 0700),
// runs the container when there is none, starts it when stopped, and
// rewrites the configuration when it differs, keeping the live servers.
// Adding or removing a backend needs a reload (SIGUSR2), which is not
// hitless for in-flight requests; switching never reloads.
func (d *Driver) Boot(ctx context.Context, host string, routes []proxy.Route) error {
	want := map[string]proxy.Route{}
	for _, r := range routes {
		if err := checkRoute(r); err != nil {
			return fmt.Errorf("boot haproxy on %s: route %s: %w", host, r.Name(), err)
		}
		want[r.Name()] = r
	}
	hs := d.host(host)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	prev := hs.routes
	hs.routes = want
	if _, err := d.render(hs, nil, nil); err != nil {
		hs.routes = prev
		return fmt.Errorf("boot haproxy on %s: %w", host, err)
	}
	hs.booted = true
	// A stats socket that answers is a running HAProxy (so its network and
	// directories exist): only the configuration needs a look.
	if live, err := d.liveServersNow(ctx, hs); err == nil {
		cur, err := d.run(ctx, host, catArgs(d.s), nil)
		if err != nil {
			cur = nil // missing file: write it
		}
		if err := d.syncWith(ctx, host, hs, cur, live); err != nil {
			return fmt.Errorf("boot haproxy on %s: %w", host, err)
		}
		return nil
	}
	out, err := d.run(ctx, host, bootArgs(d.s), nil)
	if err != nil {
		return fmt.Errorf("boot haproxy on %s: %w", host, err)
	}
	state, cur, err := parseBoot(out)
	if err != nil {
		return fmt.Errorf("boot haproxy on %s: %w", host, err)
	}
	switch state {
	case "missing": // no container: write a config without servers and run it
		cfg, err := d.render(hs, nil, nil)
		if err != nil {
			return fmt.Errorf("boot haproxy on %s: %w", host, err)
		}
		if err := d.writeConfig(ctx, host, cfg); err != nil {
			return fmt.Errorf("boot haproxy on %s: %w", host, err)
		}
		_, err = d.run(ctx, host, RunArgs(d.s), nil)
		if err == nil {
			// Booted when its stats socket answers: a switch needs it.
			if _, err := d.liveServers(ctx, hs); err != nil {
				return fmt.Errorf("boot haproxy on %s: %w", host, err)
			}
			return nil
		}
		if !strings.Contains(err.Error(), "is already in use") {
			return fmt.Errorf("boot haproxy on %s: %w", host, err)
		}
		// Another app deploying to this host ran it first: sync with it
		// as with a running one.
	case "true":
	default:
		if _, err := d.run(ctx, host, startArgs(d.s), nil); err != nil {
			return fmt.Errorf("boot haproxy on %s: %w", host, err)
		}
	}
	live, err := d.liveServers(ctx, hs)
	if err == nil {
		err = d.syncWith(ctx, host, hs, cur, live)
	}
	if err != nil {
		return fmt.Errorf("boot haproxy on %s: %w", host, err)
	}
	return nil
}

// sync renders the configuration from hs.routes and the live servers, and
// writes it when it differs from the file; it reloads HAProxy when more
// than the server lines changed.
func (d *Driver) sync(ctx context.Context, host string, hs *hostState) error {
	cur, err := d.run(ctx, host, catArgs(d.s), nil)
	if err != nil {
		cur = nil // missing file: write it
	}
	live, err := d.liveServers(ctx, hs)
	if err != nil {
		return err
	}
	return d.syncWith(ctx, host, hs, cur, live)
}

// syncWith is sync with the file's current content and the live servers
// already read.
func (d *Driver) syncWith(ctx context.Context, host string, hs *hostState, cur []byte, live map[string][]ServerState) error {
	cfg, err := d.render(hs, live, nil)
	if err != nil {
		return err
	}
	if string(cur) == string(cfg) {
		return nil
	}
	if err := d.writeConfig(ctx, host, cfg); err != nil {
		return err
	}
	if skeleton(cur) == skeleton(cfg) {
		return nil
	}
	if _, err := d.run(ctx, host, reloadArgs(d.s), nil); err != nil {
		return fmt.Errorf("reload haproxy: %w", err)
	}
	hs.client.Close() // the kept channel belongs to the old worker
	return d.waitBackends(ctx, hs)
}

// waitBackends waits (bounded) until the reloaded HAProxy shows exactly the
// backends of hs.routes.
func (d *Driver) waitBackends(ctx context.Context, hs *hostState) error {
	want := make([]string, 0, len(hs.routes))
	for n := range hs.routes {
		want = append(want, n)
	}
	slices.Sort(want)
	deadline := time.Now().Add(reloadWait)
	var got []string
	var err error
	for time.Now().Before(deadline) {
		got, err = hs.client.Backends(ctx)
		if err == nil {
			slices.Sort(got)
			if slices.Equal(got, want) {
				return nil
			}
		}
		hs.client.Close()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: after reload backends are %q, want %q (last error: %v)", proxy.ErrProxy, got, want, err)
}

// liveServers returns the ready servers per backend, waiting (bounded)
// for the socket of a container that was just started.
func (d *Driver) liveServers(ctx context.Context, hs *hostState) (map[string][]ServerState, error) {
	var live map[string][]ServerState
	var err error
	for i := 0; i < 50; i++ {
		live, err = d.liveServersNow(ctx, hs)
		if err == nil || !errors.Is(err, proxy.ErrUnreachable) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return live, err
}

// liveServersNow is liveServers without waiting.
func (d *Driver) liveServersNow(ctx context.Context, hs *hostState) (map[string][]ServerState, error) {
	states, err := hs.client.ServersState(ctx, "")
	if err != nil {
		return nil, err
	}
	live := map[string][]ServerState{}
	for _, s := range states {
		if s.Ready() {
			live[s.Backend] = append(live[s.Backend], s)
		}
	}
	return live, nil
}

// render builds the configuration from hs.routes and live; override, when
// not nil, replaces the servers of the backends it names.
func (d *Driver) render(hs *hostState, live map[string][]ServerState, override map[string][]Server) ([]byte, error) {
	c := d.s.Config
	c.Backends = nil
	for name, r := range hs.routes {
		b := Backend{Name: name, Hosts: r.Options.Hosts, ResponseTimeout: r.Options.ResponseTimeout}
		if srv, ok := override[name]; ok {
			b.Servers = srv
		} else {
			for _, s := range live[name] {
				b.Servers = append(b.Servers, Server{Name: s.Server, Addr: s.Addr})
			}
		}
		c.Backends = append(c.Backends, b)
	}
	return Render(c)
}

// run runs argv on host with the per-command timeout.
func (d *Driver) run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	return proxy.RunWithTimeout(ctx, d.runner, 0, host, argv, stdin)
}

// writeConfig replaces haproxy.cfg atomically (write a temp file, rename).
func (d *Driver) writeConfig(ctx context.Context, host string, cfg []byte) error {
	if _, err := d.run(ctx, host, writeArgs(d.s), bytes.NewReader(cfg)); err != nil {
		return fmt.Errorf("write %s: %w", d.s.ConfigPath(), err)
	}
	return nil
}

// Switch moves route's traffic on host to the container to, hitless:
//  1. probe to over the Dialer (route.Options.HealthCheck within
//     DeployTimeout; failure wraps proxy.ErrUnhealthy, nothing changed);
//  2. `add server <route>/<to.Container> <ip>:<port> pool-max-conn -1`;
//  3. `set server .../<new> state ready`, then every other server of the
//     backend `state maint` (the switch itself, well under 10 ms);
//  4. rewrite haproxy.cfg with the new server, so a restart comes back
//     right (on failure the switch is undone);
//  5. wait for the old servers' scur to reach 0 within DrainTimeout, then
//     `shutdown sessions server` on stragglers, and `del server`.
//
// from is informational: every other server of the backend is drained.
// Switching to the server that already is the only live one is a no-op.
// The route is added to the host's routes (with a reload) if Boot did not
// list it.
func (d *Driver) Switch(ctx context.Context, host string, route proxy.Route, from, to proxy.Target) error {
	name := route.Name()
	fail := func(err error) error { return fmt.Errorf("switch %s on %s to %s: %w", name, host, to.Container, err) }
	if err := checkRoute(route); err != nil {
		return fail(err)
	}
	if err := to.Validate(); err != nil {
		return fail(err)
	}
	addr := netip.AddrPortFrom(to.IP, uint16(to.Port))
	if err := validAddr(addr); err != nil {
		return fail(err)
	}
	opt := route.Options.WithDefaults()
	hs := d.host(host)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !hs.booted {
		return fail(ErrNotBooted)
	}
	if _, ok := hs.routes[name]; !ok {
		hs.routes[name] = route
		if err := d.sync(ctx, host, hs); err != nil {
			delete(hs.routes, name)
			return fail(err)
		}
	}
	hs.routes[name] = route
	c := hs.client
	log := d.s.Logger.With("host", host, "route", name, "to", to.Container)

	dial := func(ctx context.Context) (net.Conn, error) { return d.dialer.Dial(ctx, host, "tcp", addr.String()) }
	if err := WaitHealthy(ctx, dial, addr.String(), opt.HealthCheck, opt.DeployTimeout); err != nil {
		return fail(err)
	}

	states, err := c.ServersState(ctx, "")
	if err != nil {
		return fail(err)
	}
	var olds []string
	exists, alreadyLive := false, false
	for _, s := range states {
		if s.Backend != name {
			continue
		}
		if s.Server != to.Container {
			olds = append(olds, s.Server)
			continue
		}
		exists = true
		if s.Addr != addr { // same name, other address: replace it
			if err := c.SetState(ctx, name, s.Server, StateMaint); err != nil {
				return fail(err)
			}
			if err := c.DelServer(ctx, name, s.Server); err != nil {
				return fail(err)
			}
			exists = false
		} else {
			alreadyLive = s.Ready()
		}
	}
	if alreadyLive && len(olds) == 0 {
		return nil
	}
	if !exists {
		if err := c.AddServer(ctx, name, to.Container, addr); err != nil {
			return fail(err)
		}
	}

	start := time.Now()
	if err := c.SetState(ctx, name, to.Container, StateReady); err != nil {
		d.cleanup(ctx, log, c, name, []string{to.Container})
		return fail(err)
	}
	for _, old := range olds {
		if err := c.SetState(ctx, name, old, StateMaint); err != nil {
			// Put back whatever was live and take the new server out.
			for _, o := range olds {
				c.SetState(ctx, name, o, StateReady)
			}
			d.cleanup(ctx, log, c, name, []string{to.Container})
			return fail(err)
		}
	}
	switched := time.Since(start)

	live, err := d.liveServers(ctx, hs)
	if err == nil {
		var cfg []byte
		cfg, err = d.render(hs, live, map[string][]Server{name: {{Name: to.Container, Addr: addr}}})
		if err == nil {
			err = d.writeConfig(ctx, host, cfg)
		}
	}
	if err != nil {
		for _, o := range olds {
			c.SetState(ctx, name, o, StateReady)
		}
		d.cleanup(ctx, log, c, name, []string{to.Container})
		return fail(fmt.Errorf("persist config, switch undone: %w", err))
	}

	for _, old := range olds {
		err := c.WaitIdle(ctx, name, old, opt.DrainTimeout, 0)
		if errors.Is(err, ErrDrainTimeout) {
			log.Warn("old server did not drain, cutting its sessions", "server", old, "err", err)
			err = c.ShutdownSessions(ctx, name, old)
		}
		if err != nil {
			log.Warn("drain old server", "server", old, "err", err)
		}
	}
	d.cleanup(ctx, log, c, name, olds)
	log.Info("switched", "from", strings.Join(olds, ","), "switch", switched, "total", time.Since(start))
	return nil
}

// cleanup puts servers in maintenance and deletes them, retrying briefly
// while sessions close; leftovers are logged and deleted by a later switch.
func (d *Driver) cleanup(ctx context.Context, log *slog.Logger, c *Client, backend string, servers []string) {
	for _, s := range servers {
		c.SetState(ctx, backend, s, StateMaint)
		var err error
		for i := 0; i < 20; i++ {
			if err = c.DelServer(ctx, backend, s); err == nil || !errors.Is(err, proxy.ErrProxy) {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err != nil {
			log.Warn("delete server", "server", s, "err", err)
		}
	}
}

// Routes reports every backend with its ready servers (State "running"),
// or none ("down"). Hosts come from the routes given to Boot or Switch.
func (d *Driver) Routes(ctx context.Context, host string) ([]proxy.LiveRoute, error) {
	hs := d.host(host)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return d.routes(ctx, host, hs)
}

func (d *Driver) routes(ctx context.Context, host string, hs *hostState) ([]proxy.LiveRoute, error) {
	backends, err := hs.client.Backends(ctx)
	if err != nil {
		return nil, fmt.Errorf("haproxy routes on %s: %w", host, err)
	}
	states, err := hs.client.ServersState(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("haproxy routes on %s: %w", host, err)
	}
	slices.Sort(backends)
	var out []proxy.LiveRoute
	for _, b := range backends {
		lr := proxy.LiveRoute{Name: b, State: "down", Hosts: hs.routes[b].Options.Hosts}
		for _, s := range states {
			if s.Backend == b && s.Ready() {
				lr.Targets = append(lr.Targets, proxy.Target{Container: s.Server, IP: s.Addr.Addr(), Port: int(s.Addr.Port())})
				lr.State = "running"
			}
		}
		out = append(out, lr)
	}
	return out, nil
}

// Reassert switches every route of want whose only ready server is not its
// target (after a restart from a stale file, or a lost backend). Each such
// switch is health-gated like Switch.
func (d *Driver) Reassert(ctx context.Context, host string, want []proxy.Deployment) ([]string, error) {
	hs := d.host(host)
	hs.mu.Lock()
	live, err := d.routes(ctx, host, hs)
	hs.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("reassert routes on %s: %w", host, err)
	}
	var changed []string
	var errs []error
	for _, w := range want {
		i := slices.IndexFunc(live, func(r proxy.LiveRoute) bool { return r.Name == w.Route.Name() })
		if i >= 0 && len(live[i].Targets) == 1 && live[i].Targets[0] == w.Target {
			continue
		}
		if err := d.Switch(ctx, host, w.Route, proxy.Target{}, w.Target); err != nil {
			errs = append(errs, fmt.Errorf("reassert: %w", err))
			continue
		}
		changed = append(changed, w.Route.Name())
	}
	return changed, errors.Join(errs...)
}

// Remove drops the route name from host's configuration (with a reload).
// Removing an unknown route is a no-op.
func (d *Driver) Remove(ctx context.Context, host string, name string) error {
	if !proxy.ValidName(name) {
		return fmt.Errorf("remove route on %s: %w: name %q", host, proxy.ErrInvalid, name)
	}
	hs := d.host(host)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !hs.booted {
		return fmt.Errorf("remove %s on %s: %w", name, host, ErrNotBooted)
	}
	r, ok := hs.routes[name]
	if !ok {
		backends, err := hs.client.Backends(ctx)
		if err != nil {
			return fmt.Errorf("remove %s on %s: %w", name, host, err)
		}
		if !slices.Contains(backends, name) {
			return nil
		}
	}
	delete(hs.routes, name)
	if err := d.sync(ctx, host, hs); err != nil {
		if ok {
			hs.routes[name] = r
		}
		return fmt.Errorf("remove %s on %s: %w", name, host, err)
	}
	return nil
}
