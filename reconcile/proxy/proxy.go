// Package proxy defines how capstan moves a routed role's traffic on one
// host from an old container to a new one, and how it observes where that
// traffic goes today.
//
// A Driver does the work for one kind of proxy: subpackage kamalproxy drives
// basecamp/kamal-proxy exactly as Kamal 2 does (the default), subpackage
// haproxy drives HAProxy through its runtime API. Drivers reach hosts only
// through the small Runner and Dialer interfaces declared here, which the
// composition root adapts from hostexec.
//
// The reconciler calls, per host and pass: Boot (cheap when nothing
// changed), Reassert with the currently desired targets (cheap: one list or
// two runtime-API reads when nothing is lost), then Switch for every routed
// role whose container changed, and stops the old container once Switch has
// returned. Routes observes drift: which container each route sends to.
//
// Targets carry both the container (kamal-proxy routes to its name or ID
// through Docker DNS) and its IP on the proxy network (HAProxy needs the
// address); fill both and either driver works.
//
// The composition root adapts hostexec.Pool, e.g.
//
//	func (a adapter) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
//		res, err := a.pool.Run(ctx, a.hosts[host], argv, hostexec.RunOptions{Stdin: stdin})
//		return res.Stdout, err
//	}
//	func (a adapter) Dial(ctx context.Context, host, network, addr string) (net.Conn, error) {
//		return a.pool.Dial(ctx, a.hosts[host], network, addr)
//	}
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"
)

// Sentinel errors. Drivers wrap them with the host and route named, so the
// reconciler classifies failures with errors.Is.
var (
	// ErrInvalid means a route, target or setting cannot be turned into a
	// command: a bad name, address, port or an unsupported combination of
	// options. Nothing was sent to the host; the config must change.
	ErrInvalid = errors.New("invalid proxy request")
	// ErrUnsupported means the driver cannot express an option of the route
	// (for example TLS or path prefixes on the HAProxy driver).
	ErrUnsupported = errors.New("not supported by this proxy driver")
	// ErrUnhealthy means the new target did not pass its health check within
	// the deploy timeout. Traffic was not moved.
	ErrUnhealthy = errors.New("target failed to become healthy")
	// ErrProxy means the proxy refused or failed a command; the message
	// carries its answer.
	ErrProxy = errors.New("proxy command failed")
	// ErrParse means the output of a proxy command could not be understood.
	ErrParse = errors.New("unexpected proxy output")
	// ErrUnreachable means the proxy's control channel (the HAProxy stats
	// socket) could not be reached or broke mid-command; retry later.
	ErrUnreachable = errors.New("proxy control channel unreachable")
	// ErrProxyVersion means the running proxy container is older than the
	// minimum the driver accepts; it must be rebooted by hand (as Kamal
	// requires `kamal proxy reboot`).
	ErrProxyVersion = errors.New("proxy version too old")
)

// Runner executes argv on a host. It is the consumer-side view of hostexec.
//
// Run executes argv (never a shell string) on host, feeding stdin when it is
// not nil, and returns the command's stdout. A command that ran and exited
// non-zero returns a non-nil error that keeps the exit status and stderr
// (hostexec's *ExitError); drivers wrap it and never inspect stdout then.
type Runner interface {
	Run(ctx context.Context, host string, argv []string, stdin io.Reader) (stdout []byte, err error)
}

// Dialer opens a stream to an address as seen from a host, e.g. an SSH
// direct-streamlocal channel to the HAProxy stats socket ("unix",
// "/run/capstan/haproxy/admin.sock") or a direct-tcpip channel to a
// container ("tcp", "172.18.0.5:3000"). The returned conn must be closed by
// the caller.
type Dialer interface {
	Dial(ctx context.Context, host, network, addr string) (net.Conn, error)
}

// Driver switches and observes the routed roles of the proxy on each host.
// Every method is safe for concurrent use on different hosts; calls for the
// same host are serialised by the caller (one reconcile pass per host).
type Driver interface {
	// Boot makes sure the proxy runs on host and is configured for routes,
	// the routed roles that live on host. It is idempotent and cheap when
	// nothing changed; it never replaces a running proxy container.
	Boot(ctx context.Context, host string, routes []Route) error

	// Switch moves route's traffic on host to the container to. from is
	// the container serving now; the zero Target means none (first deploy)
	// or unknown. Traffic moves only after to passed its health check
	// (route.Options.HealthCheck within DeployTimeout), else the error wraps
	// ErrUnhealthy and traffic stays where it was. Switch returns after the
	// old target has drained (at most DrainTimeout, then its requests are
	// cut), so the caller may stop the old container straight away.
	Switch(ctx context.Context, host string, route Route, from, to Target) error

	// Routes returns what the proxy on host routes now, sorted by name.
	Routes(ctx context.Context, host string) ([]LiveRoute, error)

	// Reassert compares the live routes on host with want and routes every
	// missing or wrong one to its desired target again (after a proxy
	// restart that lost routes). It returns the names it changed.
	Reassert(ctx context.Context, host string, want []Deployment) (changed []string, err error)

	// Remove deletes the route named name (Route.Name) from the proxy on
	// host. Removing an unknown route is not an error.
	Remove(ctx context.Context, host string, name string) error
}

// Route is one routed role: Kamal's proxy service named
// <service>-<role>[-<destination>], with the options from `proxy:`.
type Route struct {
	Service     string
	Role        string
	Destination string // empty without a destination
	Options     Options
}

// Name returns the proxy service name, <service>-<role>[-<destination>],
// the same name Kamal gives kamal-proxy.
func (r Route) Name() string {
	n := r.Service + "-" + r.Role
	if r.Destination != "" {
		n += "-" + r.Destination
	}
	return n
}

// Validate checks the route's name parts and options. Errors wrap ErrInvalid.
func (r Route) Validate() error {
	for _, p := range []struct{ key, v string }{{"service", r.Service}, {"role", r.Role}} {
		if !nameRE.MatchString(p.v) {
			return fmt.Errorf("%w: %s %q must match %s", ErrInvalid, p.key, p.v, nameRE)
		}
	}
	if r.Destination != "" && !nameRE.MatchString(r.Destination) {
		return fmt.Errorf("%w: destination %q must match %s", ErrInvalid, r.Destination, nameRE)
	}
	return r.Options.Validate()
}

// Deployment is a route together with the target it should send traffic to.
type Deployment struct {
	Route  Route
	Target Target
}

// Target is one app container as a proxy reaches it.
type Target struct {
	// Container is the container's name or ID. kamal-proxy resolves it
	// through Docker's DNS on the kamal network (Kamal passes the short ID);
	// HAProxy uses it as the server name.
	Container string
	// IP is the container's address on the proxy's network. HAProxy needs
	// it (it has no resolver configured); kamal-proxy ignores it.
	IP netip.Addr
	// Port is the app port (Kamal's proxy.app_port, default 80).
	Port int
}

// IsZero reports whether t is the zero Target ("no container").
func (t Target) IsZero() bool { return t == Target{} }

// String returns container:port, the form kamal-proxy lists.
func (t Target) String() string { return t.Container + ":" + strconv.Itoa(t.Port) }

// Validate checks the container name and port; it does not require IP.
// Errors wrap ErrInvalid.
func (t Target) Validate() error {
	if !containerRE.MatchString(t.Container) {
		return fmt.Errorf("%w: container %q must match %s", ErrInvalid, t.Container, containerRE)
	}
	if t.Port < 1 || t.Port > 65535 {
		return fmt.Errorf("%w: port %d of %s out of range", ErrInvalid, t.Port, t.Container)
	}
	return nil
}

// LiveRoute is one route as the proxy reports it.
type LiveRoute struct {
	Name         string
	Hosts        []string // empty: catch-all
	PathPrefixes []string // empty or ["/"]: everything
	// Targets receive traffic now. kamal-proxy reports container:port
	// (Container is what was deployed, usually a short ID, IP unset);
	// HAProxy reports its ready servers with their addresses.
	Targets []Target
	// State is the proxy's word for the route: kamal-proxy's running,
	// paused or stopped; HAProxy's "running", or "down" when no server is
	// ready.
	State string
	TLS   bool
}

// Options are the keys of Kamal's `proxy:` block that shape a route, plus
// the root deploy_timeout and drain_timeout. The zero value of a field means
// "not set": Kamal does not send the flag and the proxy default applies,
// except where a field says otherwise.
type Options struct {
	Hosts        []string // proxy.host / proxy.hosts; empty = catch-all
	PathPrefixes []string // proxy.path_prefix(es)

	TLS                bool   // proxy.ssl
	TLSCertificatePath string // custom certificate, path inside the proxy
	TLSPrivateKeyPath  string
	TLSRedirect        *bool // proxy.ssl_redirect
	ForwardHeaders     *bool // proxy.forward_headers
	StripPathPrefix    *bool // proxy.strip_path_prefix

	ResponseTimeout time.Duration // proxy.response_timeout → --target-timeout
	HealthCheck     HealthCheck

	// Buffering: Kamal always sends --buffer-requests and
	// --buffer-responses, true unless proxy.buffering says false. nil
	// means Kamal's default, true.
	BufferRequests  *bool
	BufferResponses *bool
	BufferMemory    int64
	MaxRequestBody  int64
	MaxResponseBody int64

	// LogRequestHeaders nil means Kamal's default, DefaultLogRequestHeaders.
	LogRequestHeaders  []string
	LogResponseHeaders []string

	// DeployTimeout and DrainTimeout are always sent; zero means
	// DefaultDeployTimeout / DefaultDrainTimeout.
	DeployTimeout time.Duration
	DrainTimeout  time.Duration

	// ErrorPages is the error-page directory inside the proxy container.
	ErrorPages string
}

// HealthCheck is proxy.healthcheck. Zero fields are not sent; drivers that
// probe themselves use the Default* values for them.
type HealthCheck struct {
	Path     string
	Interval time.Duration
	Timeout  time.Duration
}

// Defaults, as Kamal sends them or kamal-proxy applies them.
const (
	DefaultDeployTimeout       = 30 * time.Second
	DefaultDrainTimeout        = 30 * time.Second
	DefaultHealthCheckPath     = "/up"
	DefaultHealthCheckInterval = time.Second
	DefaultHealthCheckTimeout  = 5 * time.Second
	DefaultNetwork             = "kamal"
	// DefaultCommandTimeout bounds each short remote command a driver runs
	// (docker inspect, writing a file, a list); a deploy that waits for
	// health and drain gets its deploy and drain timeouts on top.
	DefaultCommandTimeout = 30 * time.Second
)

// RunWithTimeout runs argv through r with its own timeout (d <= 0 means
// DefaultCommandTimeout), so one hung remote command cannot stall a pass.
func RunWithTimeout(ctx context.Context, r Runner, d time.Duration, host string, argv []string, stdin io.Reader) ([]byte, error) {
	if d <= 0 {
		d = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return r.Run(ctx, host, argv, stdin)
}

// DefaultLogRequestHeaders are the request headers Kamal asks kamal-proxy to
// log when proxy.logging.request_headers is not set.
var DefaultLogRequestHeaders = []string{"Cache-Control", "Last-Modified", "User-Agent"}

// WithDefaults returns o with deploy/drain timeouts and health-check values
// filled in with their defaults, the values a probing driver uses.
func (o Options) WithDefaults() Options {
	if o.DeployTimeout == 0 {
		o.DeployTimeout = DefaultDeployTimeout
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.HealthCheck.Path == "" {
		o.HealthCheck.Path = DefaultHealthCheckPath
	}
	if o.HealthCheck.Interval == 0 {
		o.HealthCheck.Interval = DefaultHealthCheckInterval
	}
	if o.HealthCheck.Timeout == 0 {
		o.HealthCheck.Timeout = DefaultHealthCheckTimeout
	}
	return o
}

// Validate applies Kamal's and kamal-proxy's checks to the options. Errors
// wrap ErrInvalid.
func (o Options) Validate() error {
	for _, h := range o.Hosts {
		if !hostRE.MatchString(h) {
			return fmt.Errorf("%w: host %q is not a host name", ErrInvalid, h)
		}
	}
	for _, p := range o.PathPrefixes {
		if !pathRE.MatchString(p) {
			return fmt.Errorf("%w: path prefix %q", ErrInvalid, p)
		}
	}
	if o.TLS && len(o.Hosts) == 0 {
		return fmt.Errorf("%w: host must be set when using TLS", ErrInvalid)
	}
	if (o.TLSCertificatePath == "") != (o.TLSPrivateKeyPath == "") {
		return fmt.Errorf("%w: TLS certificate and private key must be set together", ErrInvalid)
	}
	if o.HealthCheck.Path != "" && !pathRE.MatchString(o.HealthCheck.Path) {
		return fmt.Errorf("%w: health check path %q", ErrInvalid, o.HealthCheck.Path)
	}
	if o.MaxRequestBody != 0 && o.BufferRequests != nil && !*o.BufferRequests {
		return fmt.Errorf("%w: max request body needs request buffering", ErrInvalid)
	}
	if o.MaxResponseBody != 0 && o.BufferResponses != nil && !*o.BufferResponses {
		return fmt.Errorf("%w: max response body needs response buffering", ErrInvalid)
	}
	for _, d := range []time.Duration{o.ResponseTimeout, o.HealthCheck.Interval, o.HealthCheck.Timeout, o.DeployTimeout, o.DrainTimeout} {
		if d < 0 {
			return fmt.Errorf("%w: negative duration %s", ErrInvalid, d)
		}
	}
	for _, h := range append(append([]string(nil), o.LogRequestHeaders...), o.LogResponseHeaders...) {
		if !headerRE.MatchString(h) {
			return fmt.Errorf("%w: header name %q", ErrInvalid, h)
		}
	}
	return nil
}

var (
	// nameRE is what Kamal accepts in service, role and destination names
	// and what HAProxy accepts in backend names, minus anything a shell or
	// the runtime API parser would treat specially.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	// containerRE is Docker's container name pattern, bounded.
	containerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	hostRE      = regexp.MustCompile(`^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$`)
	pathRE      = regexp.MustCompile(`^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$`)
	headerRE    = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
)

// ValidName reports whether s is usable as a route or name part.
func ValidName(s string) bool { return nameRE.MatchString(s) }
