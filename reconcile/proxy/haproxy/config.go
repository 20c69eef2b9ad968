package haproxy

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Config defaults.
const (
	DefaultSocket         = "/run/haproxy/admin.sock" // inside the container
	DefaultBind           = ":80"
	DefaultStatsTimeout   = 2 * time.Minute
	DefaultTimeoutConnect = 5 * time.Second
	DefaultTimeoutClient  = 60 * time.Second
	DefaultTimeoutServer  = 60 * time.Second
	DefaultTimeoutRequest = 30 * time.Second
)

// Config is everything the rendered haproxy.cfg says. Zero fields take the
// Default* values.
type Config struct {
	Socket       string // stats socket path as HAProxy sees it
	Bind         string // frontend bind, e.g. ":80" or "127.0.0.1:8080"
	StatsTimeout time.Duration
	// Timeouts of the defaults section. TimeoutServer must be longer than
	// the longest request; a backend's ResponseTimeout overrides it.
	TimeoutConnect time.Duration
	TimeoutClient  time.Duration
	TimeoutServer  time.Duration
	TimeoutRequest time.Duration // timeout http-request
	Backends       []Backend
}

// Backend is one routed role.
type Backend struct {
	Name  string   // route name, <service>-<role>[-<destination>]
	Hosts []string // Host-based routing; empty = the default backend
	// ResponseTimeout overrides timeout server for this backend (Kamal's
	// proxy.response_timeout); 0 keeps the default.
	ResponseTimeout time.Duration
	// Servers are the live servers, written so that a restart comes back
	// routing to them.
	Servers []Server
}

// Server is one live app container.
type Server struct {
	Name string // the container name
	Addr netip.AddrPort
}

// Validate checks names, hosts and addresses strictly, and that the routing
// is unambiguous: at most one backend without hosts, no host twice. Errors
// wrap proxy.ErrInvalid.
func (c Config) Validate() error {
	names := map[string]bool{}
	hosts := map[string]string{}
	var catchAll string
	for _, b := range c.Backends {
		if !proxy.ValidName(b.Name) {
			return fmt.Errorf("%w: backend name %q", proxy.ErrInvalid, b.Name)
		}
		if names[b.Name] {
			return fmt.Errorf("%w: backend %s twice", proxy.ErrInvalid, b.Name)
		}
		names[b.Name] = true
		if len(b.Hosts) == 0 {
			if catchAll != "" {
				return fmt.Errorf("%w: %s and %s both route every host; set proxy.host on one", proxy.ErrInvalid, catchAll, b.Name)
			}
			catchAll = b.Name
		}
		if err := (proxy.Options{Hosts: b.Hosts}).Validate(); err != nil {
			return fmt.Errorf("backend %s: %w", b.Name, err)
		}
		for _, h := range b.Hosts {
			h = strings.ToLower(h)
			if other, ok := hosts[h]; ok {
				return fmt.Errorf("%w: host %s routed by %s and %s", proxy.ErrInvalid, h, other, b.Name)
			}
			hosts[h] = b.Name
		}
		srv := map[string]bool{}
		for _, s := range b.Servers {
			if !validServer(s.Name) || srv[s.Name] {
				return fmt.Errorf("%w: backend %s: server name %q", proxy.ErrInvalid, b.Name, s.Name)
			}
			srv[s.Name] = true
			if err := validAddr(s.Addr); err != nil {
				return fmt.Errorf("backend %s: %w", b.Name, err)
			}
		}
	}
	for _, s := range []string{c.Socket, c.Bind} {
		if strings.ContainsAny(s, " \t\n\"'#\\") {
			return fmt.Errorf("%w: socket or bind %q", proxy.ErrInvalid, s)
		}
	}
	return nil
}

// Render validates c and returns haproxy.cfg. The output is deterministic:
// equal configs render byte-identical files, so comparing files is a cheap
// "nothing changed" check.
func Render(c Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	or := func(d, def time.Duration) string {
		if d <= 0 {
			d = def
		}
		return dur(d)
	}
	socket, bind := c.Socket, c.Bind
	if socket == "" {
		socket = DefaultSocket
	}
	if bind == "" {
		bind = DefaultBind
	}
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# Written by capstan. Traffic moves through the runtime API; this file")
	p("# also lists the live servers, so a restart comes back routing right.")
	p("global")
	p("    stats socket %s mode 600 level admin expose-fd listeners", socket)
	p("    stats timeout %s", or(c.StatsTimeout, DefaultStatsTimeout))
	p("")
	p("defaults")
	p("    mode http")
	p("    option forwardfor")
	p("    timeout connect %s", or(c.TimeoutConnect, DefaultTimeoutConnect))
	p("    timeout client %s", or(c.TimeoutClient, DefaultTimeoutClient))
	p("    timeout server %s", or(c.TimeoutServer, DefaultTimeoutServer))
	p("    timeout http-request %s", or(c.TimeoutRequest, DefaultTimeoutRequest))
	p("")
	p("frontend http")
	p("    bind %s", bind)
	backends := slices.Clone(c.Backends)
	slices.SortFunc(backends, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
	// Exact hosts first, then one-label wildcards, then the catch-all, the
	// order kamal-proxy matches in.
	for _, be := range backends {
		var exact []string
		for _, h := range be.Hosts {
			if !strings.HasPrefix(h, "*.") {
				exact = append(exact, strings.ToLower(h))
			}
		}
		if len(exact) > 0 {
			slices.Sort(exact)
			p("    use_backend %s if { hdr(host),field(1,:),lower -m str %s }", be.Name, strings.Join(exact, " "))
		}
	}
	for _, be := range backends {
		var wild []string
		for _, h := range be.Hosts {
			if strings.HasPrefix(h, "*.") {
				wild = append(wild, strings.ToLower(h[1:]))
			}
		}
		if len(wild) > 0 {
			slices.Sort(wild)
			p("    use_backend %s if { hdr(host),field(1,:),lower,regsub(^[^.]+,) -m str %s }", be.Name, strings.Join(wild, " "))
		}
	}
	for _, be := range backends {
		if len(be.Hosts) == 0 {
			p("    default_backend %s", be.Name)
		}
	}
	for _, be := range backends {
		p("")
		p("backend %s", be.Name)
		if be.ResponseTimeout > 0 {
			p("    timeout server %s", dur(be.ResponseTimeout))
		}
		servers := slices.Clone(be.Servers)
		slices.SortFunc(servers, func(a, b Server) int { return strings.Compare(a.Name, b.Name) })
		for _, s := range servers {
			p("    server %s %s pool-max-conn -1", s.Name, s.Addr)
		}
	}
	return b.Bytes(), nil
}

// dur writes a duration in HAProxy's syntax (ms, s or m).
func dur(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	default:
		return fmt.Sprintf("%dms", max(d/time.Millisecond, 1))
	}
}

// skeleton returns the config without its server lines: two configs with the
// same skeleton differ only in live servers, which the runtime API can
// change without a reload.
func skeleton(cfg []byte) string {
	var out []string
	for _, l := range strings.Split(string(cfg), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "server ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
