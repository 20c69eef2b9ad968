// Package kamalproxy drives basecamp/kamal-proxy exactly as Kamal 2 does:
// it boots the kamal-proxy container with Kamal's `docker run` line, and
// switches traffic with `docker exec kamal-proxy kamal-proxy deploy` using
// Kamal's flags and defaults. The argv builders are pure and pinned by golden
// tests to the commands Kamal 2.11 ran (docs/kamal-transcript.md).
//
// kamal-proxy health-checks the new target, swaps it in atomically and
// drains the old one inside the deploy call, so Switch needs no probing of
// its own.
package kamalproxy

import (
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Defaults, as Kamal 2.12 uses them.
const (
	DefaultContainer   = "kamal-proxy"
	DefaultRepository  = "basecamp/kamal-proxy"
	DefaultVersion     = "v0.9.2" // also the minimum Kamal accepts
	MinimumVersion     = "v0.9.2"
	DefaultHTTPPort    = 80
	DefaultHTTPSPort   = 443
	DefaultLogMaxSize  = "10m"
	DefaultConfigVol   = "kamal-proxy-config"
	DefaultAppsConfig  = "/root/.kamal/proxy/apps-config" // $PWD/.kamal/proxy/apps-config for user root
	containerConfigDir = "/home/kamal-proxy/.config/kamal-proxy"
	containerAppsDir   = "/home/kamal-proxy/.apps-config"
)

// Settings are the boot-time options of the shared kamal-proxy container
// (Kamal's proxy.run). The zero value boots it as Kamal does by default.
type Settings struct {
	Container  string // container name; "" = DefaultContainer
	Network    string // "" = proxy.DefaultNetwork
	Registry   string // e.g. "10.231.0.1:5000"; "" = Docker Hub
	Repository string // "" = DefaultRepository
	Version    string // image tag; "" = DefaultVersion

	HTTPPort  int  // host side of the HTTP publish; 0 = 80
	HTTPSPort int  // host side of the HTTPS publish; 0 = 443
	NoPublish bool // proxy.run.publish: false
	// BindIPs prefix the published ports, one pair of --publish per IP.
	BindIPs     []netip.Addr
	MetricsPort int    // 0 = off
	Debug       bool   // kamal-proxy run --debug
	LogMaxSize  string // "" = DefaultLogMaxSize
	// Options are extra `docker run` flags (proxy.run.options), in order.
	Options []Option
	// AppsConfigDir is the absolute host path Kamal bind-mounts as
	// /home/kamal-proxy/.apps-config; "" = DefaultAppsConfig.
	AppsConfigDir string
}

// Option is one extra `docker run` flag: --Key Value (Value "" = bare flag).
type Option struct {
	Key, Value string
}

func (s Settings) withDefaults() Settings {
	if s.Container == "" {
		s.Container = DefaultContainer
	}
	if s.Network == "" {
		s.Network = proxy.DefaultNetwork
	}
	if s.Repository == "" {
		s.Repository = DefaultRepository
	}
	if s.Version == "" {
		s.Version = DefaultVersion
	}
	if s.HTTPPort == 0 {
		s.HTTPPort = DefaultHTTPPort
	}
	if s.HTTPSPort == 0 {
		s.HTTPSPort = DefaultHTTPSPort
	}
	if s.LogMaxSize == "" {
		s.LogMaxSize = DefaultLogMaxSize
	}
	if s.AppsConfigDir == "" {
		s.AppsConfigDir = DefaultAppsConfig
	}
	return s
}

// Image returns [registry/]repository:version.
func (s Settings) Image() string {
	s = s.withDefaults()
	img := s.Repository + ":" + s.Version
	if s.Registry != "" {
		img = s.Registry + "/" + img
	}
	return img
}

// Validate checks the settings. Errors wrap proxy.ErrInvalid.
func (s Settings) Validate() error {
	s = s.withDefaults()
	if !proxy.ValidName(s.Container) || !proxy.ValidName(s.Network) {
		return fmt.Errorf("%w: container %q / network %q", proxy.ErrInvalid, s.Container, s.Network)
	}
	for _, p := range []int{s.HTTPPort, s.HTTPSPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%w: port %d", proxy.ErrInvalid, p)
		}
	}
	if s.MetricsPort < 0 || s.MetricsPort > 65535 {
		return fmt.Errorf("%w: metrics port %d", proxy.ErrInvalid, s.MetricsPort)
	}
	if s.NoPublish && len(s.BindIPs) > 0 {
		return fmt.Errorf("%w: bind IPs need published ports", proxy.ErrInvalid)
	}
	if !path.IsAbs(s.AppsConfigDir) {
		return fmt.Errorf("%w: apps config dir %q must be absolute", proxy.ErrInvalid, s.AppsConfigDir)
	}
	for _, o := range s.Options {
		if o.Key == "" || o.Key[0] == '-' {
			return fmt.Errorf("%w: docker run option %q", proxy.ErrInvalid, o.Key)
		}
	}
	return nil
}

// NetworkArgs creates the proxy network (Kamal ignores "already exists").
func NetworkArgs(s Settings) []string {
	return []string{"docker", "network", "create", s.withDefaults().Network}
}

// StateArgs prints whether the proxy container runs ("true" or "false")
// and its image, whose tag is the proxy version (kamal-proxy has no version
// command).
func StateArgs(s Settings) []string {
	return []string{"docker", "inspect", s.withDefaults().Container, "--format", "{{.State.Running}} {{.Config.Image}}"}
}

// MkdirArgs creates the apps-config directory, as Kamal does before booting.
func MkdirArgs(s Settings) []string {
	return []string{"mkdir", "-p", s.withDefaults().AppsConfigDir}
}

// StartArgs starts an existing, stopped proxy container.
func StartArgs(s Settings) []string {
	return []string{"docker", "container", "start", s.withDefaults().Container}
}

// RunArgs is Kamal's `docker run` of the kamal-proxy container (with
// proxy.run set), for when StartArgs failed because none exists.
func RunArgs(s Settings) []string {
	s = s.withDefaults()
	argv := []string{"docker", "run", "--name", s.Container, "--network", s.Network,
		"--detach", "--restart", "unless-stopped",
		"--volume", DefaultConfigVol + ":" + containerConfigDir,
		"--volume", s.AppsConfigDir + ":" + containerAppsDir}
	if !s.NoPublish {
		ips := []string{""}
		if len(s.BindIPs) > 0 {
			ips = ips[:0]
			for _, ip := range s.BindIPs {
				if ip.Is6() {
					ips = append(ips, "["+ip.String()+"]:")
				} else {
					ips = append(ips, ip.String()+":")
				}
			}
		}
		for _, ip := range ips {
			argv = append(argv,
				"--publish", ip+strconv.Itoa(s.HTTPPort)+":80",
				"--publish", ip+strconv.Itoa(s.HTTPSPort)+":443")
		}
	}
	argv = append(argv, "--log-opt", "max-size="+s.LogMaxSize)
	if s.MetricsPort != 0 {
		argv = append(argv, "--expose="+strconv.Itoa(s.MetricsPort))
	}
	for _, o := range s.Options {
		argv = append(argv, "--"+o.Key)
		if o.Value != "" {
			argv = append(argv, o.Value)
		}
	}
	argv = append(argv, s.Image(), "kamal-proxy", "run")
	if s.Debug {
		argv = append(argv, "--debug")
	}
	if s.MetricsPort != 0 {
		argv = append(argv, "--metrics-port", strconv.Itoa(s.MetricsPort))
	}
	return argv
}

func execArgs(s Settings, args ...string) []string {
	return append([]string{"docker", "exec", s.withDefaults().Container, "kamal-proxy"}, args...)
}

// ListArgs lists the proxy's services (parse with ParseList).
func ListArgs(s Settings) []string { return execArgs(s, "list") }

// RemoveArgs removes the service name from the proxy.
func RemoveArgs(s Settings, name string) []string { return execArgs(s, "remove", name) }

// DeployArgs is Kamal's `kamal-proxy deploy` for route with target, flags in
// Kamal's order and shape (--flag=value, bare --flag for true). It validates
// route and target first; errors wrap proxy.ErrInvalid.
func DeployArgs(s Settings, route proxy.Route, target proxy.Target) ([]string, error) {
	if err := route.Validate(); err != nil {
		return nil, fmt.Errorf("deploy %s: %w", route.Name(), err)
	}
	if err := target.Validate(); err != nil {
		return nil, fmt.Errorf("deploy %s: %w", route.Name(), err)
	}
	o := route.Options
	var f flags
	f.str("target", target.String())
	for _, h := range o.Hosts {
		f.str("host", h)
	}
	if o.TLS {
		f.boolean("tls", true)
	}
	f.str("tls-certificate-path", o.TLSCertificatePath)
	f.str("tls-private-key-path", o.TLSPrivateKeyPath)
	f.dur("deploy-timeout", orDefault(o.DeployTimeout, proxy.DefaultDeployTimeout))
	f.dur("drain-timeout", orDefault(o.DrainTimeout, proxy.DefaultDrainTimeout))
	f.dur("health-check-interval", o.HealthCheck.Interval)
	f.dur("health-check-timeout", o.HealthCheck.Timeout)
	f.str("health-check-path", o.HealthCheck.Path)
	f.dur("target-timeout", o.ResponseTimeout)
	f.boolean("buffer-requests", o.BufferRequests == nil || *o.BufferRequests)
	f.boolean("buffer-responses", o.BufferResponses == nil || *o.BufferResponses)
	f.int("buffer-memory", o.BufferMemory)
	f.int("max-request-body", o.MaxRequestBody)
	f.int("max-response-body", o.MaxResponseBody)
	for _, p := range o.PathPrefixes {
		f.str("path-prefix", p)
	}
	f.optBool("strip-path-prefix", o.StripPathPrefix)
	f.optBool("forward-headers", o.ForwardHeaders)
	f.optBool("tls-redirect", o.TLSRedirect)
	reqHeaders := o.LogRequestHeaders
	if reqHeaders == nil {
		reqHeaders = proxy.DefaultLogRequestHeaders
	}
	for _, h := range reqHeaders {
		f.str("log-request-header", h)
	}
	for _, h := range o.LogResponseHeaders {
		f.str("log-response-header", h)
	}
	f.str("error-pages", o.ErrorPages)
	return execArgs(s, append([]string{"deploy", route.Name()}, f...)...), nil
}

// flags builds --key=value arguments the way Kamal's optionize(with: "=")
// does, skipping unset values.
type flags []string

func (f *flags) str(k, v string) {
	if v != "" {
		*f = append(*f, "--"+k+"="+v)
	}
}

func (f *flags) int(k string, v int64) {
	if v != 0 {
		*f = append(*f, "--"+k+"="+strconv.FormatInt(v, 10))
	}
}

func (f *flags) boolean(k string, v bool) {
	if v {
		*f = append(*f, "--"+k)
	} else {
		*f = append(*f, "--"+k+"=false")
	}
}

func (f *flags) optBool(k string, v *bool) {
	if v != nil {
		f.boolean(k, *v)
	}
}

func (f *flags) dur(k string, d time.Duration) {
	if d > 0 {
		*f = append(*f, "--"+k+"="+formatDuration(d))
	}
}

// formatDuration writes whole seconds as Kamal does ("30s") and anything
// finer in Go's syntax, which kamal-proxy parses.
func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
