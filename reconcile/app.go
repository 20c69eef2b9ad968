package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Defaults of App settings.
const (
	DefaultLockTimeout    = 5 * time.Minute
	DefaultStaleLockAfter = time.Hour
	DefaultParallel       = 30 // Kamal's sshkit max_concurrent_starts
	// DefaultObserveTimeout bounds the observation of one host: a host
	// that has not answered by then is unreachable for this pass.
	DefaultObserveTimeout = 5 * time.Second
)

// App is one application's desired state and how to reach its hosts. The
// zero values of the settings take the defaults above.
type App struct {
	Config *kamal.Config
	// Hosts is the desired state of every host, from Config.Plans().
	Hosts []*kamal.HostPlan
	SSH   Host
	// Proxy switches routed roles; ProxyContainer is the name of its
	// container on each host ("kamal-proxy", "capstan-haproxy").
	Proxy          proxy.Driver
	ProxyContainer string
	Log            *slog.Logger

	// RebootAccessories reboots an accessory whose spec changed (they hold
	// data, so by default a change is only reported).
	RebootAccessories bool
	// StopUnmanaged stops running containers that carry the service label
	// but belong to no role (only reported by default).
	StopUnmanaged bool
	// NoRollback keeps hosts that already switched on the new version when
	// a later boot group fails (Kamal's behaviour). By default they are
	// switched back so the fleet never stays mixed.
	NoRollback bool
	// ImageDigest, when known (the daemon resolves it from the registry),
	// lets a host that already has this digest skip the pull.
	ImageDigest string

	LockTimeout    time.Duration
	StaleLockAfter time.Duration
	Parallel       int
	// ObserveTimeout bounds the observation of each host (routes, the
	// observe command and any inspect).
	ObserveTimeout time.Duration
	// Performer is written to the audit log and the lock ("capstan@host").
	Performer string
	// LockID identifies this capstan in the lock's message. A lock whose
	// message carries the same ID was left by an earlier run of this very
	// capstan (killed mid-pass) and is reclaimed instead of waited on. The
	// daemon keeps its ID in its state directory; "" disables reclaiming.
	LockID string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Redact masks secret values in text capstan keeps or shows that came
	// from a host (a failed container's log lines); nil keeps it as is.
	Redact func(string) string

	// Jobs ties the release jobs of an Apply to a revision so each runs
	// once per revision; the zero value runs them on every apply that
	// deploys.
	Jobs JobScope

	apiOnce sync.Once
	api     *dockerAPI // what the observe script taught about each host, and the API channels
}

// Inherit takes over what prev learned about the hosts (their homes,
// DOCKER_HOST and open Docker API channels), so that the first pass of a
// new revision is as fast as the next ones. prev must reach the hosts
// through the same SSH connections; call it before a's first Plan.
func (a *App) Inherit(prev *App) {
	if prev != nil {
		api := prev.dockerAPI()
		a.apiOnce.Do(func() { a.api = api })
	}
}

// observe reads one host: through the Docker API over a kept SSH channel
// once the observe script has told its home and DOCKER_HOST (on the lock
// host, with the lock file read alongside), else with the script.
func (a *App) observe(ctx context.Context, host string) (*Observed, error) {
	api := a.dockerAPI()
	if home, ok := api.home(host); ok && api.usable(host) {
		var lock []byte
		var lockErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			if host == a.LockHost() {
				lock, lockErr = a.SSH.Run(ctx, host, []string{"sh", "-c", `cat "$1/details" 2>/dev/null || true`, "sh", a.LockDir()}, nil)
			}
		}()
		cs, err := api.containers(ctx, host)
		<-done
		if err == nil && lockErr == nil {
			return &Observed{Host: host, Containers: cs, Home: home, Lock: parseLock(lock), At: a.now()}, nil
		}
		if ctx.Err() != nil {
			return nil, errors.Join(err, lockErr)
		}
		if err != nil {
			api.markBroken(host)
			a.log().Debug("docker API unusable; observing with the script", "host", host, "err", err)
		}
	}
	o, err := Observer{Run: a.SSH}.Observe(ctx, host, a.LockDir())
	if err == nil && o.Home != "" {
		api.learn(host, o.Home, o.DockerHost, o.DockerContext)
	}
	return o, err
}

// dockerAPI returns the App's Docker API fast path.
func (a *App) dockerAPI() *dockerAPI {
	a.apiOnce.Do(func() { a.api = &dockerAPI{dial: a.SSH, log: a.log()} })
	return a.api
}

// APICalls is how many Docker Engine API requests a and the Apps it
// inherited from (or that inherited from it) have made: with the pool's
// command count, the round trips to the hosts.
func (a *App) APICalls() uint64 { return a.dockerAPI().calls.Load() }

func (a *App) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

func (a *App) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *App) staleLockAfter() time.Duration {
	if a.StaleLockAfter > 0 {
		return a.StaleLockAfter
	}
	return DefaultStaleLockAfter
}

func (a *App) observeTimeout() time.Duration {
	if a.ObserveTimeout > 0 {
		return a.ObserveTimeout
	}
	return DefaultObserveTimeout
}

func (a *App) parallel() int {
	if a.Parallel > 0 {
		return a.Parallel
	}
	return DefaultParallel
}

// LockHost is where Kamal keeps the deploy lock: the primary role's first
// host (the first host for accessory-only configs).
func (a *App) LockHost() string {
	if p := a.Config.Primary(); p != nil && len(p.Hosts) > 0 {
		return p.Hosts[0]
	}
	if hs := a.Config.AllHosts(); len(hs) > 0 {
		return hs[0]
	}
	return ""
}

// LockDir is Kamal's lock directory, relative to the SSH user's home.
func (a *App) LockDir() string { return ".kamal/lock-" + a.Config.NamePrefix() }

// AuditLog is Kamal's audit log, relative to the SSH user's home.
func (a *App) AuditLog() string { return ".kamal/" + a.Config.NamePrefix() + "-audit.log" }

// routed reports whether a proxied role runs on the host.
func (a *App) routed(hp *kamal.HostPlan) bool {
	for _, c := range hp.Apps {
		if c.Proxy != nil {
			return true
		}
	}
	return false
}

// Route returns the proxy route of role on host's plan, or false when the
// role is not proxied.
func (a *App) Route(role string) (proxy.Route, bool) {
	r := a.Config.Role(role)
	if r == nil || r.Proxy == nil {
		return proxy.Route{}, false
	}
	p := r.Proxy
	o := proxy.Options{
		Hosts: p.Hosts, PathPrefixes: p.PathPrefixes, TLS: p.SSL,
		TLSRedirect: p.SSLRedirect, ForwardHeaders: p.ForwardHeaders, StripPathPrefix: p.StripPathPrefix,
		BufferRequests: &p.BufferRequests, BufferResponses: &p.BufferResponses,
		LogRequestHeaders: p.LogRequestHeaders, LogResponseHeaders: p.LogResponseHeaders,
		DeployTimeout: time.Duration(a.Config.DeployTimeout) * time.Second,
		DrainTimeout:  time.Duration(a.Config.DrainTimeout) * time.Second,
	}
	if p.ResponseTimeout != nil {
		o.ResponseTimeout = time.Duration(*p.ResponseTimeout) * time.Second
	}
	o.HealthCheck.Path = p.Healthcheck.Path
	if p.Healthcheck.Interval != nil {
		o.HealthCheck.Interval = time.Duration(*p.Healthcheck.Interval) * time.Second
	}
	if p.Healthcheck.Timeout != nil {
		o.HealthCheck.Timeout = time.Duration(*p.Healthcheck.Timeout) * time.Second
	}
	if p.BufferMemory != nil {
		o.BufferMemory = *p.BufferMemory
	}
	if p.MaxRequestBody != nil {
		o.MaxRequestBody = *p.MaxRequestBody
	}
	if p.MaxResponseBody != nil {
		o.MaxResponseBody = *p.MaxResponseBody
	}
	return proxy.Route{Service: a.Config.Service, Role: role, Destination: a.Config.Destination, Options: o}, true
}

// routesOn returns the routes of the proxied roles on a host.
func (a *App) routesOn(hp *kamal.HostPlan) []proxy.Route {
	var out []proxy.Route
	for _, c := range hp.Apps {
		if rt, ok := a.Route(c.Role); ok && c.Proxy != nil {
			out = append(out, rt)
		}
	}
	return out
}

// forEachHost runs f for every host in parallel, at most a.parallel() at a
// time. One host's failure never cancels the others.
func (a *App) forEachHost(ctx context.Context, hosts []string, f func(ctx context.Context, i int, host string)) {
	forEachHost(ctx, make(chan struct{}, a.parallel()), hosts, f)
}

// forEachHost runs f for every host in parallel, each holding a slot of
// sem while it runs.
func forEachHost(ctx context.Context, sem chan struct{}, hosts []string, f func(ctx context.Context, i int, host string)) {
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			f(ctx, i, h)
		}()
	}
	wg.Wait()
}

// Plan observes every host (in parallel, one round trip each unless a
// container deployed without capstan must be compared) and returns the
// steps that would make them match, plus their drift. It changes nothing.
func (a *App) Plan(ctx context.Context) (*Plan, error) {
	if a.Config == nil {
		return nil, errors.New("reconcile: App without config")
	}
	p := &Plan{Service: a.Config.Service, Destination: a.Config.Destination, Version: a.Config.Version.Name(),
		Image: a.Config.Image(), CreatedAt: a.now(), app: a}
	hosts := make([]string, len(a.Hosts))
	for i, h := range a.Hosts {
		hosts[i] = h.Host
	}
	p.Hosts = make([]*HostPlan, len(a.Hosts))
	a.forEachHost(ctx, hosts, func(pctx context.Context, i int, host string) {
		ctx, cancel := context.WithTimeout(pctx, a.observeTimeout())
		defer cancel()
		// The proxy's routes are read on their own channel at the same
		// time as the observe command: still one round trip of latency.
		var routes map[string]proxy.LiveRoute
		var wg sync.WaitGroup
		if a.Proxy != nil && a.routed(a.Hosts[i]) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				live, err := a.Proxy.Routes(ctx, host)
				if err != nil {
					// The plan then checks no route (the proxy's own
					// state decides: proxy-down when it is not running).
					a.log().Debug("proxy routes unreadable", "host", host, "err", err)
					return
				}
				routes = map[string]proxy.LiveRoute{}
				for _, r := range live {
					routes[r.Name] = r
				}
			}()
		}
		o, err := a.observe(ctx, host)
		wg.Wait()
		if err == nil {
			o.Routes = routes
			err = a.inspectUnfingerprinted(ctx, a.Hosts[i], o)
		}
		if err != nil {
			if pctx.Err() == nil && ctx.Err() != nil {
				err = fmt.Errorf("%w: no answer within %s", ErrUnreachable, a.observeTimeout())
			}
			p.Hosts[i] = &HostPlan{Host: host, Error: err.Error(), Steps: []Step{}, Drift: []Drift{}}
			return
		}
		p.Hosts[i] = a.planHost(a.Hosts[i], o)
	})
	for i, hp := range p.Hosts {
		if hp == nil { // ctx cancelled before the host ran
			p.Hosts[i] = &HostPlan{Host: hosts[i], Error: ctx.Err().Error(), Steps: []Step{}, Drift: []Drift{}}
		}
	}
	p.Jobs = a.plannedJobs(p.Hosts)
	return p, ctx.Err()
}

// inspected is the part of `docker inspect` adoption compares.
type inspected struct {
	ID     string
	Config struct {
		Image  string
		Env    []string
		Labels map[string]string
		Cmd    []string
	}
	HostConfig struct {
		Binds []string
	}
}

// inspectUnfingerprinted inspects the running containers that already have
// their desired name but no fingerprint made with this capstan's key
// (deployed by kamal, or by another capstan), so the plan can adopt them by
// comparing their actual spec.
func (a *App) inspectUnfingerprinted(ctx context.Context, want *kamal.HostPlan, o *Observed) error {
	var ids []string
	for _, spec := range want.Apps {
		for _, c := range o.Containers {
			if c.Name == spec.Name && !comparable(c.Fingerprint, spec.Fingerprint) && c.Running() {
				ids = append(ids, c.ID)
			}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	out, err := a.SSH.Run(ctx, o.Host, append([]string{"docker", "inspect", "--type", "container"}, ids...), nil)
	if err != nil {
		return fmt.Errorf("inspect containers on %s: %w", o.Host, err)
	}
	var list []inspected
	if err := json.Unmarshal(out, &list); err != nil {
		return fmt.Errorf("inspect containers on %s: %w: %v", o.Host, ErrObserve, err)
	}
	o.inspected = map[string]*inspected{}
	for i := range list {
		o.inspected[list[i].ID] = &list[i]
	}
	return nil
}

// comparable reports whether two fingerprints were made with the same key
// (so equal means the same spec). A fingerprint without a key id (made
// before they carried one) is compared by what the container runs.
func comparable(fp, want string) bool {
	return fp != "" && kamal.FingerprintKeyID(fp) != "" && kamal.FingerprintKeyID(fp) == kamal.FingerprintKeyID(want)
}

// adopted reports whether c, a container without capstan's fingerprint
// (deployed by `kamal`), already runs what spec describes: same image, every
// desired env variable (clear and secret) with the same value, every
// desired label, the same command and volumes. Options are not compared
// (Docker reports them in another shape).
func (a *App) adopted(c *Container, spec *kamal.Container, o *Observed) bool {
	in := o.inspected[c.ID]
	if in == nil {
		return false
	}
	if in.Config.Image != spec.Image {
		return false
	}
	env := map[string]bool{}
	for _, e := range in.Config.Env {
		env[e] = true
	}
	for _, e := range desiredEnv(spec) {
		if !env[e] {
			return false
		}
	}
	for _, kv := range spec.Labels {
		if kv.Key == kamal.FingerprintLabel {
			continue
		}
		if v, ok := in.Config.Labels[kv.Key]; !ok || v != kv.Value {
			return false
		}
	}
	cmd, vols := runTail(spec, o.Home)
	if len(cmd) > 0 && strings.Join(cmd, "\x00") != strings.Join(in.Config.Cmd, "\x00") {
		return false
	}
	binds := map[string]bool{}
	for _, b := range in.HostConfig.Binds {
		binds[b] = true
	}
	for _, v := range vols {
		if strings.HasPrefix(v, "/") && !binds[v] {
			return false
		}
	}
	return true
}

// desiredEnv is every KEY=value the container should see: --env flags of
// its run command and the lines of its env file.
func desiredEnv(spec *kamal.Container) []string {
	var out []string
	argv := spec.Run.Argv
	for i := 0; i+1 < len(argv); i++ {
		// A bare --env KEY takes KEY from the docker client's environment,
		// which on the host is unset: the container does not get it.
		if (argv[i] == "--env" || argv[i] == "-e") && strings.Contains(argv[i+1], "=") {
			out = append(out, argv[i+1])
		}
	}
	for _, line := range strings.Split(spec.EnvFile.Content.Reveal(), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// runTail returns the command after the image and the --volume values of
// a docker run argv, with HomePrefix expanded.
func runTail(spec *kamal.Container, home string) (cmd, vols []string) {
	argv := spec.Run.Expand(home)
	for i := 0; i < len(argv); i++ {
		if argv[i] == "--volume" && i+1 < len(argv) {
			vols = append(vols, argv[i+1])
		}
		if argv[i] == spec.Image {
			return argv[i+1:], vols
		}
	}
	return nil, vols
}
