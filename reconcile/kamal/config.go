package kamal

import (
	"regexp"
	"strings"
	"time"
)

// KamalVersion is the Kamal release whose configuration rules this package
// implements (checked against minimum_version).
const KamalVersion = "2.12.0"

// Defaults Kamal applies when a key is absent.
const (
	DefaultConfigFile       = "config/deploy.yml"
	DefaultPrimaryRole      = "web"
	DefaultRetainContainers = 5
	DefaultReadinessDelay   = 7
	DefaultDeployTimeout    = 30
	DefaultDrainTimeout     = 30
	DefaultAppPort          = 80
	DefaultNetwork          = "kamal"
	DefaultRestart          = "unless-stopped"
	DefaultSecretsPath      = ".kamal/secrets"
	DefaultLogMaxSize       = "10m"
	DefaultProxyRepository  = "basecamp/kamal-proxy"
	DefaultProxyVersion     = "v0.9.2"
	DefaultProxyHTTPPort    = 80
	DefaultProxyHTTPSPort   = 443
)

// DefaultLogRequestHeaders are the request headers Kamal always asks
// kamal-proxy to log unless proxy.logging.request_headers is set.
var DefaultLogRequestHeaders = []string{"Cache-Control", "Last-Modified", "User-Agent"}

// ignoredSections are accepted and validated but only matter to Kamal's
// build or local tooling; capstan reports them as ignored.
var ignoredSections = []string{"builder", "hooks_path", "hooks_output", "aliases", "output", "sshkit", "run_directory"}

// LoadOptions says where the configuration is and what it may read. The
// zero value loads config/deploy.yml without a destination, an empty
// environment and command substitution refused.
type LoadOptions struct {
	// ConfigFile is the path of deploy.yml inside the file system
	// (default "config/deploy.yml"). A destination file is the same path
	// with ".yml" replaced by ".D.yml".
	ConfigFile string
	// Destination is Kamal's -d value; empty means none.
	Destination string
	// LookupEnv reads capstan's own environment, for ERB ENV[...] and for
	// $VAR in secrets files, like os.LookupEnv: a variable set to "" is
	// found (ERB's ENV.fetch returns ""). nil means an empty environment.
	LookupEnv func(string) (string, bool)
	// SecretsEnv holds variables from the operator's env file; they take
	// precedence over LookupEnv when expanding $VAR in secrets files (they
	// are not visible to ERB).
	SecretsEnv map[string]string
	// RunCommand evaluates $(command) in secrets files (the command text,
	// with its $VAR already substituted as Kamal does). nil refuses every
	// command substitution with ErrUnsafe. Only the operator (a capstan
	// flag) may set it; nothing in the repository can. Load calls it
	// concurrently for independent commands, so it must be safe for
	// concurrent use; one deadline for all of them is the caller's (a
	// context it closes over), and the environment it should give them is
	// SecretsEnviron.
	RunCommand func(command string) (string, error)
	// SkipSecrets checks the configuration without reading the secrets
	// files or running anything, as Kamal's `config` does: references stay
	// unresolved and Plan returns ErrSecretsSkipped.
	SkipSecrets bool
	// Version overrides the version to run (the --version flag).
	Version string
	// Revision is the git commit SHA of the checked-out revision, the
	// default version. ERB's `git rev-parse HEAD` (and the other git
	// commands listed in the README) answer from it; "" makes them fail.
	Revision string
	// RevisionDescribe is what `git describe --tags --always` prints for
	// Revision; "" answers the short SHA (the first ShortRevisionLen
	// characters of Revision), which is git's answer when no tag reaches
	// the commit.
	RevisionDescribe string
	// RevisionTime is the commit time of Revision. ERB's Time.now and
	// `date +FORMAT` answer it (in UTC), so a render is reproducible; the
	// zero value makes them fail.
	RevisionTime time.Time
	// FingerprintKey keys the HMAC of the spec fingerprint label. Plans
	// refuse to render without it.
	FingerprintKey []byte
}

// Config is a validated Kamal configuration with its secrets resolved and
// the version decided. It is immutable after Load.
type Config struct {
	Service     string
	Destination string // "" when none
	// Repository is "[registry.server/]image" without tag.
	Repository string
	Registry   Registry
	Version    Version

	PrimaryRole string
	// Roles are sorted by name with the primary role first.
	Roles []*Role
	// Accessories are sorted by name.
	Accessories []*Accessory

	Labels  []KV     // root labels, on every app container
	Volumes []string // root volumes, on every app container
	Logging Logging  // root logging

	DeployTimeout    int
	DrainTimeout     int
	ReadinessDelay   int
	RetainContainers int
	StopTimeout      *int
	ErrorPagesPath   string
	SecretsPath      string
	Boot             Boot
	AllowEmptyRoles  bool
	// SSH is the ssh: block; Capstan is capstan's x-capstan: block.
	SSH     SSH
	Capstan Capstan

	// Files are the configuration files read, base first.
	Files []string
	// Ignored lists the root keys present that only affect Kamal's build
	// or local tooling (builder, hooks_path, aliases, output, …).
	Ignored []string

	secrets map[string]string // resolved secrets that are referenced
	// secretsSkipped is set when loaded with LoadOptions.SkipSecrets.
	secretsSkipped bool
	rootEnv        EnvSpec
	tagEnvs        map[string]EnvSpec
	merged         *node
	key            []byte
}

// KV is one ordered key/value pair (labels, clear env). A Value that is
// blank (empty or only white space) is passed as the bare key, as Kamal
// does: Docker then sets a label to "" and leaves an env variable unset.
type KV struct {
	Key, Value string
	isFalse    bool // the YAML boolean false, which Kamal prints as KEY=false unquoted
}

// Option is one docker run option from an options: map. Flag means the
// value was true (a bare --key); otherwise each value becomes "--key v".
type Option struct {
	Key    string
	Values []string
	Flag   bool
}

// Registry is where images are pulled from. Username and Password are
// resolved (secret references looked up); they are secret values.
type Registry struct {
	Server   string // "" = Docker Hub
	Username Secret
	Password Secret
}

// Local reports whether the registry is Kamal's localhost registry.
func (r Registry) Local() bool { return strings.HasPrefix(r.Server, "localhost") }

// Version is the version to run.
type Version struct {
	// Value is an image tag, or a digest "sha256:<64 hex>".
	Value string
	// Source explains where Value came from, e.g. "--version",
	// "x-capstan.version (config/deploy.yml:3)" or "git revision".
	Source string
}

// IsDigest reports whether the version pins an image digest.
func (v Version) IsDigest() bool { return strings.HasPrefix(v.Value, "sha256:") }

// Name is the version as used in container names and KAMAL_VERSION: the
// tag itself, or for a digest "sha256-" plus its first 12 hex digits
// (":" is not allowed in container names).
func (v Version) Name() string {
	if v.IsDigest() {
		return "sha256-" + v.Value[len("sha256:"):len("sha256:")+12]
	}
	return v.Value
}

// Logging is a docker logging configuration.
type Logging struct {
	Driver  string
	Options []KV
}

// Boot is Kamal's rolling boot setting.
type Boot struct {
	Limit         string // "" = all hosts at once; "N" or "N%"
	Wait          int
	ParallelRoles bool
}

// EnvSpec is an env section: clear values and secret references.
type EnvSpec struct {
	Clear  []KV
	Secret []SecretRef
}

// SecretRef is one env.secret entry: Name is the container variable, Key
// the secret looked up (they differ for "NAME:KEY" aliases).
type SecretRef struct {
	Name, Key string
	where     loc
}

type loc struct {
	file string
	line int
	path string
}

// Role is one server role.
type Role struct {
	Name    string
	Hosts   []string
	tags    map[string][]string
	Cmd     string
	Options []Option
	Restart string // validated restart policy, default unless-stopped
	Labels  []KV   // root labels merged with the role's
	Logging Logging
	// Proxy is nil when the role is not proxied.
	Proxy       *Proxy
	AssetPath   string
	StopTimeout *int
	env         EnvSpec
	cmdArgs     []string
}

// Tags returns the host tags of host in this role, in order.
func (r *Role) Tags(host string) []string { return r.tags[host] }

// Proxy holds a role's or accessory's kamal-proxy deploy options.
type Proxy struct {
	Hosts           []string
	AppPort         int
	SSL             bool
	CertificatePEM  string // secret name of a custom certificate, "" = Let's Encrypt
	PrivateKeyPEM   string // secret name of its key
	SSLRedirect     *bool
	ForwardHeaders  *bool
	ResponseTimeout *int
	PathPrefixes    []string
	StripPathPrefix *bool
	Healthcheck     struct {
		Path              string
		Interval, Timeout *int
	}
	BufferRequests, BufferResponses               bool
	BufferMemory, MaxRequestBody, MaxResponseBody *int64
	LogRequestHeaders, LogResponseHeaders         []string
	// Run is the proxy.run block, nil when absent (Kamal's legacy boot config).
	Run *ProxyRun
}

// CustomCert reports whether the proxy uses a custom certificate.
func (p *Proxy) CustomCert() bool { return p.CertificatePEM != "" }

// ProxyRun are the boot options of the shared kamal-proxy container.
type ProxyRun struct {
	HTTPPort, HTTPSPort, MetricsPort int
	Debug                            bool
	LogMaxSize                       string
	Publish                          bool
	BindIPs                          []string
	Registry, Repository, Version    string
	Options                          []Option
}

// Image returns the proxy image reference.
func (r *ProxyRun) Image() string {
	img := r.Repository + ":" + r.Version
	if r.Registry != "" {
		img = r.Registry + "/" + img
	}
	return img
}

// Accessory is one accessories: entry.
type Accessory struct {
	Name        string // key under accessories:
	Service     string // container name and service label (default S-Name)
	Image       string
	Registry    *Registry // nil = none of its own
	Hosts       []string
	Cmd         string
	Port        string
	Labels      []KV
	Options     []Option
	Restart     string
	Files       []Mount
	Directories []Mount
	Volumes     []string
	Network     string
	Proxy       *Proxy
	env         EnvSpec
	cmdArgs     []string
}

// Mount is an accessory file or directory: Local in the repository (files)
// or on the host (directories), Remote in the container.
type Mount struct {
	Local, Remote, Mode, Owner, Options string
}

var (
	reService   = regexp.MustCompile(`^[a-z0-9_-]+$`)
	reAliasName = regexp.MustCompile(`^[a-z0-9_-]+$`)
	reRestart   = regexp.MustCompile(`^(?:no|always|unless-stopped|on-failure(?::\d+)?)$`)
	reTag       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	reDigest    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	reDest      = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// ValidVersion reports whether v is usable as a version: an image tag or
// a sha256 digest.
func ValidVersion(v string) bool { return reTag.MatchString(v) || reDigest.MatchString(v) }

// Role returns the role named name, or nil.
func (c *Config) Role(name string) *Role {
	for _, r := range c.Roles {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Primary returns the primary role (nil for accessory-only configs).
func (c *Config) Primary() *Role { return c.Role(c.PrimaryRole) }

// AllHosts returns every host running a role or an accessory, primary
// role hosts first, then in order of appearance.
func (c *Config) AllHosts() []string {
	var out []string
	for _, r := range c.Roles {
		for _, h := range r.Hosts {
			if !contains(out, h) {
				out = append(out, h)
			}
		}
	}
	for _, a := range c.Accessories {
		for _, h := range a.Hosts {
			if !contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// AppHosts returns the hosts running at least one role.
func (c *Config) AppHosts() []string {
	var out []string
	for _, r := range c.Roles {
		for _, h := range r.Hosts {
			if !contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// proxiesOn returns the proxy configs of roles and accessories on host h.
func (c *Config) proxiesOn(h string) []*Proxy {
	var out []*Proxy
	for _, r := range c.Roles {
		if r.Proxy != nil && contains(r.Hosts, h) {
			out = append(out, r.Proxy)
		}
	}
	for _, a := range c.Accessories {
		if a.Proxy != nil && contains(a.Hosts, h) {
			out = append(out, a.Proxy)
		}
	}
	return out
}

// NamePrefix is "S[-D]", used for the app directory, lock and audit log.
func (c *Config) NamePrefix() string {
	if c.Destination != "" {
		return c.Service + "-" + c.Destination
	}
	return c.Service
}

// LockDir is Kamal's deploy lock directory ".kamal/lock-S[-D]" (on the
// primary host), relative to the SSH user's home.
func (c *Config) LockDir() string { return ".kamal/lock-" + c.NamePrefix() }

// AuditLog is Kamal's audit log ".kamal/S[-D]-audit.log" (every host).
func (c *Config) AuditLog() string { return ".kamal/" + c.NamePrefix() + "-audit.log" }

// AppDir is Kamal's app directory ".kamal/apps/S[-D]", relative to the
// SSH user's home.
func (c *Config) AppDir() string { return ".kamal/apps/" + c.NamePrefix() }

// Image returns the full image reference to run: REPO:V or REPO@sha256:….
func (c *Config) Image() string { return c.ImageAt(c.Version) }

// ImageAt returns the image reference of the app's repository at version
// v: REPO:TAG, or REPO@sha256:… for a digest.
func (c *Config) ImageAt(v Version) string {
	if v.IsDigest() {
		return c.Repository + "@" + v.Value
	}
	return c.Repository + ":" + v.Value
}

// LatestTag returns REPO:latest[-D], the tag Kamal moves after a deploy.
func (c *Config) LatestTag() string {
	if c.Destination != "" {
		return c.Repository + ":latest-" + c.Destination
	}
	return c.Repository + ":latest"
}

// Prefix returns the container prefix "S-R[-D]" of role r, which is also
// its kamal-proxy service name.
func (c *Config) Prefix(r *Role) string {
	p := c.Service + "-" + r.Name
	if c.Destination != "" {
		p += "-" + c.Destination
	}
	return p
}

// ContainerName returns "S-R[-D]-V" for role r.
func (c *Config) ContainerName(r *Role) string { return c.Prefix(r) + "-" + c.Version.Name() }
