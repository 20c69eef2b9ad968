package kamal

import (
	"errors"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
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
	// $VAR in secrets files. nil means an empty environment.
	LookupEnv func(string) (string, bool)
	// SecretsEnv holds variables from the operator's env file; they take
	// precedence over LookupEnv when expanding $VAR in secrets files (they
	// are not visible to ERB).
	SecretsEnv map[string]string
	// RunCommand evaluates $(command) in secrets files. nil refuses every
	// command substitution with ErrUnsafe. Only the operator (a capstan
	// flag) may set it; nothing in the repository can.
	RunCommand func(command string) (string, error)
	// Version overrides the version to run (the --version flag).
	Version string
	// Revision is the git commit SHA of the checked-out revision, the
	// default version.
	Revision string
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
	rootEnv EnvSpec
	tagEnvs map[string]EnvSpec
	merged  *node
	key     []byte
}

// KV is one ordered key/value pair (labels, clear env).
type KV struct{ Key, Value string }

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

// Load reads, renders, merges and validates the configuration in fsys (the
// repository root), resolves the secrets it references and decides the
// version. On failure the error is an Errors listing every problem found.
func Load(fsys fs.FS, opts LoadOptions) (*Config, error) {
	errs := &collector{}
	if opts.ConfigFile == "" {
		opts.ConfigFile = DefaultConfigFile
	}
	opts.ConfigFile = path.Clean(opts.ConfigFile)
	if opts.Destination != "" && !reDest.MatchString(opts.Destination) {
		errs.add(ErrInvalid, "", 0, "", "invalid destination %q", opts.Destination)
		return nil, errs.result()
	}
	lookup := func(name string) (string, bool) {
		if name == "KAMAL_DESTINATION" {
			return opts.Destination, opts.Destination != ""
		}
		if opts.LookupEnv == nil {
			return "", false
		}
		return opts.LookupEnv(name)
	}
	budget := maxNodes
	files := []string{opts.ConfigFile}
	if opts.Destination != "" {
		ext := path.Ext(opts.ConfigFile)
		files = append(files, strings.TrimSuffix(opts.ConfigFile, ext)+"."+opts.Destination+ext)
	}
	var merged *node
	for _, f := range files {
		n := readConfigFile(fsys, f, lookup, &budget, errs)
		if n == nil {
			continue
		}
		if !n.isMap() {
			errs.at(ErrInvalid, n, "", "the configuration should be a hash (found %s)", n.typeName())
			continue
		}
		if merged == nil {
			merged = n
		} else {
			merged = deepMerge(merged, n)
		}
	}
	if len(errs.errs) > 0 {
		return nil, errs.result()
	}
	c := &Config{Destination: opts.Destination, Files: files, merged: merged, key: opts.FingerprintKey}
	b := &builder{c: c, errs: errs, root: merged, opts: opts}
	if b.build() {
		b.checkHooks(fsys)
		b.resolveSecrets(fsys)
	}
	if err := errs.result(); err != nil {
		return nil, err
	}
	return c, nil
}

func readConfigFile(fsys fs.FS, file string, lookup func(string) (string, bool), budget *int, errs *collector) *node {
	f, err := fsys.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			errs.add(ErrMissingFile, file, 0, "", "configuration file not found")
		} else {
			errs.add(ErrMissingFile, file, 0, "", "cannot read: %v", err)
		}
		return nil
	}
	defer f.Close()
	data, err := readLimited(f)
	if err != nil {
		errs.add(ErrTooLarge, file, 0, "", "%v", err)
		return nil
	}
	text, lines, ok := renderERB(file, string(data), lookup, errs)
	if !ok {
		return nil
	}
	if len(text) > MaxFileSize {
		errs.add(ErrTooLarge, file, 0, "", "file is larger than %d bytes after ERB rendering", MaxFileSize)
		return nil
	}
	return parseYAML(file, []byte(text), lines, budget, errs)
}

func readLimited(f fs.File) ([]byte, error) {
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 32*1024)
	for {
		n, err := f.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if len(buf) > MaxFileSize {
			return nil, errors.New("file is larger than 1 MiB")
		}
		if err != nil {
			if errors.Is(err, fsEOF) {
				return buf, nil
			}
			return nil, err
		}
	}
}

// builder turns the validated tree into a Config.
type builder struct {
	c    *Config
	errs *collector
	root *node
	opts LoadOptions
	refs []secretUse
}

// secretUse is one place a secret is referenced.
type secretUse struct {
	key string
	loc
}

func (b *builder) err(n *node, path, format string, args ...any) {
	b.errs.at(ErrInvalid, n, path, format, args...)
}

// errKey reports an error at the line of key k in map m.
func (b *builder) errKey(m *node, k, path, format string, args ...any) {
	line := 0
	file := ""
	if m != nil {
		file, line = m.keyFile(k), m.keyLine(k)
	}
	b.errs.add(ErrInvalid, file, line, path, format, args...)
}

// build decodes the tree; it reports false when the tree had schema
// errors (then secrets are not looked up: the references are unreliable).
func (b *builder) build() bool {
	root, c := b.root, b.c
	v := &validator{errs: b.errs}
	v.checkStruct(root, rootSpec, "")
	v.checkLabels(root.get("labels"), "labels")
	b.versionBlock()
	b.capstanBlock(root.get("x-capstan"))
	b.sshBlock()
	if len(b.errs.errs) > 0 {
		return false // types are unreliable; cross-field rules would only add noise
	}

	for _, k := range ignoredSections {
		if root.has(k) {
			c.Ignored = append(c.Ignored, k)
		}
	}
	// Required keys.
	c.Service = root.get("service").str()
	if !root.has("service") || c.Service == "" {
		b.errKey(root, "service", "service", "missing required configuration")
	} else if !reService.MatchString(strings.ToLower(c.Service)) {
		b.err(root.get("service"), "service", "service name can only include alphanumeric characters, hyphens, and underscores")
	}
	reg := root.get("registry")
	if reg == nil {
		b.errs.add(ErrInvalid, root.file, 1, "registry", "missing required configuration")
	}
	c.Registry = b.registry(reg, "registry")
	image := root.get("image").str()
	if image == "" {
		if c.Registry.Local() {
			image = c.Service
		} else {
			b.errs.add(ErrInvalid, root.keyFile("image"), root.keyLine("image"), "image", "missing required configuration")
		}
	}
	c.Repository = image
	if c.Registry.Server != "" && image != "" {
		c.Repository = c.Registry.Server + "/" + image
	}
	if bl := root.get("builder"); bl == nil || bl.get("arch") == nil {
		b.errs.add(ErrInvalid, root.keyFile("builder"), root.keyLine("builder"), "builder.arch", "missing required configuration (Kamal 2 requires the architecture to build for, e.g. amd64)")
	}

	c.PrimaryRole = strOr(root.get("primary_role"), DefaultPrimaryRole)
	c.RetainContainers = intOr(root.get("retain_containers"), DefaultRetainContainers)
	if c.RetainContainers < 1 {
		b.err(root.get("retain_containers"), "retain_containers", "must retain at least 1 container")
	}
	c.ReadinessDelay = intOr(root.get("readiness_delay"), DefaultReadinessDelay)
	c.DeployTimeout = intOr(root.get("deploy_timeout"), DefaultDeployTimeout)
	c.DrainTimeout = intOr(root.get("drain_timeout"), DefaultDrainTimeout)
	if n := root.get("stop_timeout"); n != nil {
		v := int(n.intValue())
		c.StopTimeout = &v
	}
	c.ErrorPagesPath = root.get("error_pages_path").str()
	c.SecretsPath = strOr(root.get("secrets_path"), DefaultSecretsPath)
	c.AllowEmptyRoles = root.get("allow_empty_roles").boolValue()
	c.Labels = kvs(root.get("labels"))
	c.Volumes = strs(root.get("volumes"))
	c.Logging = logging(root.get("logging"))
	if bt := root.get("boot"); bt != nil {
		c.Boot = Boot{Limit: bt.get("limit").str(), Wait: int(bt.get("wait").intValue()), ParallelRoles: bt.get("parallel_roles").boolValue()}
		if l := c.Boot.Limit; l != "" && !regexp.MustCompile(`^[1-9][0-9]*%?$`).MatchString(l) {
			b.err(bt.get("limit"), "boot.limit", "should be a positive integer or a percentage like \"25%%\"")
		}
	}
	if mv := root.get("minimum_version"); mv != nil && versionLess(KamalVersion, mv.str()) {
		b.err(mv, "minimum_version", "current Kamal version is %s, minimum required is %s", KamalVersion, mv.str())
	}
	if root.get("require_destination").boolValue() && c.Destination == "" {
		b.errKey(root, "require_destination", "require_destination", "you must specify a destination (-d)")
	}
	if c.Registry.Local() {
		if rm := root.get("builder").get("remote"); rm != nil && !strings.HasPrefix(rm.str(), "ssh://") {
			b.err(rm, "builder.remote", "local registry requires a remote builder reached over ssh:// (found %q)", rm.str())
		}
	}

	b.roles()
	b.accessories()
	if len(c.Roles) == 0 && len(c.Accessories) == 0 {
		b.errs.add(ErrInvalid, root.file, 1, "servers", "no servers or accessories specified")
	}
	b.proxyRules()
	return true
}

// checkHooks rejects the Kamal 1 traefik hooks, as Kamal 2 does.
func (b *builder) checkHooks(fsys fs.FS) {
	dir := strOr(b.root.get("hooks_path"), ".kamal/hooks")
	for _, h := range []string{"pre-traefik-reboot", "post-traefik-reboot"} {
		if _, err := fs.Stat(fsys, path.Join(path.Clean(dir), h)); err == nil {
			b.errs.add(ErrInvalid, path.Join(dir, h), 0, "", "found %s, these should be renamed to (pre|post)-proxy-reboot", h)
		}
	}
}

// versionBlock decides the version: --version > x-capstan.version > revision.
func (b *builder) versionBlock() {
	c, root := b.c, b.root
	xc := root.get("x-capstan")
	var xv *node
	if xc != nil {
		if !xc.isMap() {
			b.err(xc, "x-capstan", "should be a hash (found %s)", xc.typeName())
		} else {
			for i, k := range xc.keys {
				if !capstanKeys[k] {
					b.errs.add(ErrInvalid, xc.kfiles[i], xc.klines[i], joinPath("x-capstan", k), "unknown key (x-capstan supports: version, proxy, haproxy, self_heal, reboot_accessories, stop_unmanaged, rollback)")
				}
			}
			xv = xc.get("version")
			if xv != nil && !xv.stringish() {
				b.err(xv, "x-capstan.version", "should be a string (found %s)", xv.typeName())
				xv = nil
			}
		}
	}
	switch {
	case b.opts.Version != "":
		c.Version = Version{Value: b.opts.Version, Source: "--version"}
		if !ValidVersion(c.Version.Value) {
			b.errs.add(ErrVersion, "", 0, "", "--version %q is neither an image tag nor a sha256:<64 hex> digest", c.Version.Value)
		}
	case xv != nil:
		c.Version = Version{Value: xv.str(), Source: "x-capstan.version (" + xv.file + ":" + strconv.Itoa(xv.line) + ")"}
		if !ValidVersion(c.Version.Value) {
			b.errs.at(ErrVersion, xv, "x-capstan.version", "%q is neither an image tag nor a sha256:<64 hex> digest", c.Version.Value)
		}
	case b.opts.Revision != "":
		c.Version = Version{Value: b.opts.Revision, Source: "git revision"}
		if !ValidVersion(c.Version.Value) {
			b.errs.add(ErrVersion, "", 0, "", "git revision %q is not a valid image tag", c.Version.Value)
		}
	default:
		b.errs.add(ErrVersion, "", 0, "", "no version: not a git checkout; pass --version or set x-capstan.version in the configuration")
	}
}

func (b *builder) registry(n *node, path string) Registry {
	var r Registry
	if n == nil {
		return r
	}
	r.Server = n.get("server").str()
	r.Username = b.secretRef(n, "username", joinPath(path, "username"))
	r.Password = b.secretRef(n, "password", joinPath(path, "password"))
	return r
}

// secretRef reads a literal-or-[SECRET] value; secret references are
// recorded and resolved later.
func (b *builder) secretRef(m *node, k, path string) Secret {
	n := m.get(k)
	switch {
	case n == nil:
		return Secret{}
	case n.isSeq():
		name := n.items[0].str()
		b.refs = append(b.refs, secretUse{key: name, loc: loc{n.items[0].file, n.items[0].line, indexPath(path, 0)}})
		return Secret{ref: name}
	default:
		return Secret{v: scalarString(n), set: true}
	}
}

func (b *builder) envSpec(n *node, path string) EnvSpec {
	var e EnvSpec
	if n == nil {
		return e
	}
	if !(n.has("clear") || n.has("secret") || n.has("tags")) {
		e.Clear = kvs(n)
		return e
	}
	e.Clear = kvs(n.get("clear"))
	if s := n.get("secret"); s != nil {
		for i, it := range s.items {
			name, key := it.str(), it.str()
			if i := strings.Index(name, ":"); i >= 0 {
				name, key = name[:i], name[i+1:]
			}
			p := indexPath(joinPath(path, "secret"), i)
			if name == "" || key == "" {
				b.err(it, p, "secret should be NAME or NAME:SECRET_KEY")
				continue
			}
			ref := SecretRef{Name: name, Key: key, where: loc{it.file, it.line, p}}
			e.Secret = append(e.Secret, ref)
			b.refs = append(b.refs, secretUse{key: key, loc: ref.where})
		}
	}
	return e
}

// cmdArgs splits a cmd: string into argv, refusing shell syntax.
func (b *builder) cmdArgs(n *node, path string) []string {
	if n == nil {
		return nil
	}
	words, bad := splitCmd(scalarString(n))
	if bad != "" {
		b.err(n, path, "uses shell syntax (%s) that Kamal would leave to the host's shell; capstan runs commands as argv, so write it as sh -c '...'", bad)
	}
	return words
}

func (b *builder) roles() {
	c, root := b.c, b.root
	servers := root.get("servers")
	if servers == nil {
		return
	}
	type rawRole struct {
		name string
		n    *node // role map, or nil for the simple form
		h    *node // hosts list
		file string
		line int
	}
	var raws []rawRole
	if servers.isSeq() {
		raws = append(raws, rawRole{name: DefaultPrimaryRole, h: servers, file: root.keyFile("servers"), line: root.keyLine("servers")})
	} else {
		for i, name := range servers.keys {
			rn := servers.vals[i]
			if rn.isSeq() {
				raws = append(raws, rawRole{name: name, h: rn, file: servers.kfiles[i], line: servers.klines[i]})
			} else {
				raws = append(raws, rawRole{name: name, n: rn, h: rn.get("hosts"), file: servers.kfiles[i], line: servers.klines[i]})
			}
		}
	}
	rootEnv := b.envSpec(root.get("env"), "env")
	tagEnvs := map[string]EnvSpec{}
	if te := root.get("env").get("tags"); te != nil {
		for i, tag := range te.keys {
			tagEnvs[tag] = b.envSpec(te.vals[i], joinPath("env.tags", tag))
		}
	}
	c.tagEnvs = tagEnvs
	c.rootEnv = rootEnv
	rootProxy := root.get("proxy")
	for _, raw := range raws {
		p := joinPath("servers", raw.name)
		if servers.isSeq() {
			p = "servers"
		}
		r := &Role{Name: raw.name, tags: map[string][]string{}, Restart: DefaultRestart}
		if raw.h != nil {
			hp := p
			if raw.n != nil {
				hp = joinPath(p, "hosts")
			}
			for i, it := range raw.h.items {
				host, tags := it.str(), []string(nil)
				if it.isMap() {
					host = it.keys[0]
					t := it.vals[0]
					if t.isSeq() {
						tags = strs(t)
					} else {
						tags = []string{t.str()}
					}
				}
				if contains(r.Hosts, host) {
					b.err(it, indexPath(hp, i), "duplicate host %s", host)
					continue
				}
				r.Hosts = append(r.Hosts, host)
				r.tags[host] = tags
			}
		}
		rn := raw.n
		r.Cmd = rn.get("cmd").str()
		r.cmdArgs = b.cmdArgs(rn.get("cmd"), joinPath(p, "cmd"))
		r.Options, r.Restart = options(rn.get("options"))
		r.Labels = mergeKV(c.Labels, kvs(rn.get("labels")))
		r.Logging = c.Logging
		if rl := rn.get("logging"); rl != nil {
			r.Logging = logging(deepMerge(orEmpty(root.get("logging")), rl))
		}
		r.AssetPath = strOr(rn.get("asset_path"), root.get("asset_path").str())
		if n := rn.get("stop_timeout"); n != nil {
			v := int(n.intValue())
			r.StopTimeout = &v
		} else {
			r.StopTimeout = c.StopTimeout
		}
		r.env = b.envSpec(rn.get("env"), joinPath(p, "env"))
		// Proxy: primary role unless proxy: false; others only if set.
		rp := rn.get("proxy")
		primary := raw.name == c.PrimaryRole
		running := (primary && !(rp.isBool() && !rp.boolValue())) || (!primary && rp != nil && !(rp.isBool() && !rp.boolValue()))
		if running {
			pn := orEmpty(rootProxy)
			pp := "proxy"
			if rp.isMap() {
				pn = deepMerge(pn, rp)
				pp = joinPath(p, "proxy")
			}
			r.Proxy = b.proxy(pn, pp, rootProxy, rp)
		}
		if len(r.Hosts) == 0 {
			switch {
			case primary:
				b.errs.add(ErrInvalid, raw.file, raw.line, p, "no servers specified for the %s primary_role", raw.name)
			case !c.AllowEmptyRoles:
				b.errs.add(ErrInvalid, raw.file, raw.line, p, "no servers specified for the %s role. You can ignore this with allow_empty_roles: true", raw.name)
			}
		}
		if r.Proxy != nil && r.Proxy.SSL && !r.Proxy.CustomCert() && len(r.Hosts) > 1 {
			b.errs.add(ErrInvalid, raw.file, raw.line, p, "SSL is only supported on a single server unless you provide custom certificates, found %d servers for role %s", len(r.Hosts), r.Name)
		}
		c.Roles = append(c.Roles, r)
	}
	sort.SliceStable(c.Roles, func(i, j int) bool {
		pi, pj := c.Roles[i].Name == c.PrimaryRole, c.Roles[j].Name == c.PrimaryRole
		if pi != pj {
			return pi
		}
		return c.Roles[i].Name < c.Roles[j].Name
	})
	if len(c.Roles) > 0 && c.Role(c.PrimaryRole) == nil {
		file, line := root.keyFile("primary_role"), root.keyLine("primary_role")
		if !root.has("primary_role") {
			file, line = root.keyFile("servers"), root.keyLine("servers")
		}
		b.errs.add(ErrInvalid, file, line, "primary_role", "the primary_role %s isn't defined", c.PrimaryRole)
	}
}

func orEmpty(n *node) *node {
	if n.isMap() {
		return n
	}
	return &node{kind: mapNode}
}

// proxy decodes a (merged) proxy map. src nodes are used for error locations.
func (b *builder) proxy(n *node, path string, srcs ...*node) *Proxy {
	p := &Proxy{AppPort: DefaultAppPort, BufferRequests: true, BufferResponses: true}
	at := func(k string) *node {
		// the most specific source defining k, for error lines
		for i := len(srcs) - 1; i >= 0; i-- {
			if srcs[i].has(k) {
				return srcs[i]
			}
		}
		return n
	}
	if n.has("host") && n.has("hosts") {
		b.errKey(at("hosts"), "hosts", path, "specify one of 'host' or 'hosts', not both")
	}
	if h := n.get("hosts"); h != nil {
		p.Hosts = strs(h)
	} else if h := n.get("host"); h != nil {
		for _, s := range strings.Split(h.str(), ",") {
			if s = strings.TrimSpace(s); s != "" {
				p.Hosts = append(p.Hosts, s)
			}
		}
	}
	if v := n.get("app_port"); v != nil {
		p.AppPort = int(v.intValue())
		if p.AppPort < 1 || p.AppPort > 65535 {
			b.err(v, joinPath(path, "app_port"), "should be a port number between 1 and 65535")
		}
	}
	if s := n.get("ssl"); s != nil {
		if s.isMap() {
			p.SSL = true
			p.CertificatePEM = s.get("certificate_pem").str()
			p.PrivateKeyPEM = s.get("private_key_pem").str()
			sp := joinPath(path, "ssl")
			switch {
			case p.CertificatePEM == "" && p.PrivateKeyPEM == "":
				b.err(s, sp, "certificate_pem and private_key_pem are required for a custom certificate")
			case p.CertificatePEM == "":
				b.err(s, sp, "missing certificate_pem setting (required when private_key_pem is present)")
			case p.PrivateKeyPEM == "":
				b.err(s, sp, "missing private_key_pem setting (required when certificate_pem is present)")
			default:
				b.refs = append(b.refs,
					secretUse{key: p.CertificatePEM, loc: loc{s.file, s.get("certificate_pem").line, joinPath(sp, "certificate_pem")}},
					secretUse{key: p.PrivateKeyPEM, loc: loc{s.file, s.get("private_key_pem").line, joinPath(sp, "private_key_pem")}})
			}
		} else {
			p.SSL = s.boolValue()
		}
		if p.SSL && len(p.Hosts) == 0 && !p.CustomCert() {
			b.errKey(at("ssl"), "ssl", path, "must set a host to enable automatic SSL")
		}
	}
	p.SSLRedirect = optBool(n.get("ssl_redirect"))
	p.ForwardHeaders = optBool(n.get("forward_headers"))
	p.ResponseTimeout = optInt(n.get("response_timeout"))
	if v := n.get("path_prefixes"); v != nil {
		p.PathPrefixes = strs(v)
	} else if v := n.get("path_prefix"); v != nil {
		for _, s := range strings.Split(v.str(), ",") {
			if s = strings.TrimSpace(s); s != "" {
				p.PathPrefixes = append(p.PathPrefixes, s)
			}
		}
	}
	p.StripPathPrefix = optBool(n.get("strip_path_prefix"))
	if hc := n.get("healthcheck"); hc != nil {
		p.Healthcheck.Path = hc.get("path").str()
		p.Healthcheck.Interval = optInt(hc.get("interval"))
		p.Healthcheck.Timeout = optInt(hc.get("timeout"))
	}
	if bf := n.get("buffering"); bf != nil {
		if v := bf.get("requests"); v != nil {
			p.BufferRequests = v.boolValue()
		}
		if v := bf.get("responses"); v != nil {
			p.BufferResponses = v.boolValue()
		}
		p.BufferMemory = optInt64(bf.get("memory"))
		p.MaxRequestBody = optInt64(bf.get("max_request_body"))
		p.MaxResponseBody = optInt64(bf.get("max_response_body"))
	}
	p.LogRequestHeaders = DefaultLogRequestHeaders
	if lg := n.get("logging"); lg != nil {
		if v := lg.get("request_headers"); v != nil {
			p.LogRequestHeaders = strs(v)
		}
		p.LogResponseHeaders = strs(lg.get("response_headers"))
	}
	if r := n.get("run"); r != nil {
		p.Run = proxyRun(r)
		if !p.Run.Publish && (r.has("http_port") || r.has("https_port") || r.has("bind_ips")) {
			b.err(r, joinPath(path, "run"), "http_port, https_port and bind_ips cannot be set when publish is false")
		}
	}
	return p
}

func proxyRun(n *node) *ProxyRun {
	r := &ProxyRun{
		HTTPPort: intOr(n.get("http_port"), DefaultProxyHTTPPort), HTTPSPort: intOr(n.get("https_port"), DefaultProxyHTTPSPort),
		MetricsPort: intOr(n.get("metrics_port"), 0), Debug: n.get("debug").boolValue(),
		LogMaxSize: strOr(n.get("log_max_size"), DefaultLogMaxSize), Publish: true,
		BindIPs: strs(n.get("bind_ips")), Registry: n.get("registry").str(),
		Repository: strOr(n.get("repository"), DefaultProxyRepository), Version: strOr(n.get("version"), DefaultProxyVersion),
	}
	if v := n.get("publish"); v != nil {
		r.Publish = v.boolValue()
	}
	r.Options, _ = options(n.get("options"))
	return r
}

func (b *builder) accessories() {
	c, root := b.c, b.root
	acc := root.get("accessories")
	if acc == nil {
		return
	}
	for i, name := range acc.keys {
		n := acc.vals[i]
		p := joinPath("accessories", name)
		a := &Accessory{Name: name, Restart: DefaultRestart}
		a.Service = strOr(n.get("service"), c.Service+"-"+name)
		a.Image = n.get("image").str()
		if a.Image == "" {
			b.errs.add(ErrInvalid, acc.kfiles[i], acc.klines[i], joinPath(p, "image"), "missing required configuration")
		}
		if rg := n.get("registry"); rg != nil {
			r := b.registry(rg, joinPath(p, "registry"))
			a.Registry = &r
			if r.Server != "" && a.Image != "" {
				a.Image = r.Server + "/" + a.Image // as Kamal: [registry.server, image].join("/")
			}
		}
		var placement []string
		for _, k := range []string{"host", "hosts", "role", "roles", "tag", "tags"} {
			if n.has(k) {
				placement = append(placement, k)
			}
		}
		if len(placement) != 1 {
			b.errs.add(ErrInvalid, acc.kfiles[i], acc.klines[i], p, "specify one of `host`, `hosts`, `role`, `roles`, `tag` or `tags`")
		} else {
			a.Hosts = b.accessoryHosts(n, placement[0], p)
		}
		a.Cmd = n.get("cmd").str()
		a.cmdArgs = b.cmdArgs(n.get("cmd"), joinPath(p, "cmd"))
		if pt := n.get("port"); pt != nil {
			a.Port = scalarString(pt)
		}
		a.Labels = kvs(n.get("labels"))
		a.Options, a.Restart = options(n.get("options"))
		a.env = b.envSpec(n.get("env"), joinPath(p, "env"))
		a.Files = mounts(n.get("files"))
		a.Directories = mounts(n.get("directories"))
		for j, m := range append(append([]Mount(nil), a.Files...), a.Directories...) {
			if m.Local == "" || m.Remote == "" {
				b.err(n, p, "files and directories entries need local:remote (entry %d)", j)
			}
		}
		a.Volumes = strs(n.get("volumes"))
		a.Network = strOr(n.get("network"), DefaultNetwork)
		if pn := n.get("proxy"); pn != nil {
			a.Proxy = b.proxy(pn, joinPath(p, "proxy"), pn)
		}
		c.Accessories = append(c.Accessories, a)
	}
	sort.SliceStable(c.Accessories, func(i, j int) bool { return c.Accessories[i].Name < c.Accessories[j].Name })
}

func (b *builder) accessoryHosts(n *node, k, p string) []string {
	c := b.c
	v := n.get(k)
	var out []string
	add := func(h string) {
		if !contains(out, h) {
			out = append(out, h)
		}
	}
	switch k {
	case "host":
		add(v.str())
	case "hosts":
		for _, h := range strs(v) {
			add(h)
		}
	case "role", "roles":
		names := []string{v.str()}
		if k == "roles" {
			names = strs(v)
		}
		for _, name := range names {
			r := c.Role(name)
			if r == nil {
				b.err(v, joinPath(p, k), "unknown role %s", name)
				continue
			}
			for _, h := range r.Hosts {
				add(h)
			}
		}
	case "tag", "tags":
		tags := []string{v.str()}
		if k == "tags" {
			tags = strs(v)
		}
		for _, t := range tags {
			for _, h := range c.AllHosts() {
				for _, r := range c.Roles {
					if contains(r.tags[h], t) {
						add(h)
					}
				}
			}
		}
	}
	return out
}

// proxyRules checks rules that span roles and accessories.
func (b *builder) proxyRules() {
	c := b.c
	servers := b.root.get("servers")
	sslHosts := map[string]string{}
	for _, r := range c.Roles {
		if r.Proxy == nil || !r.Proxy.SSL {
			continue
		}
		for _, h := range r.Proxy.Hosts {
			if other, ok := sslHosts[h]; ok && other != r.Name {
				b.errs.add(ErrInvalid, servers.keyFile(r.Name), servers.keyLine(r.Name), joinPath("servers", r.Name), "different roles can't share the same host for SSL: %s", h)
			}
			sslHosts[h] = r.Name
		}
	}
	// proxy.run blocks on one host must be identical.
	for _, h := range c.AllHosts() {
		var first *ProxyRun
		set := false
		for _, p := range c.proxiesOn(h) {
			if !set {
				first, set = p.Run, true
				continue
			}
			if !equalRun(first, p.Run) {
				b.errs.add(ErrInvalid, b.root.keyFile("proxy"), b.root.keyLine("proxy"), "proxy.run", "all proxy run configurations for host %s must be identical", h)
				break
			}
		}
	}
}

func equalRun(a, b *ProxyRun) bool {
	if a == nil || b == nil {
		return a == b
	}
	return strings.Join(proxyRunArgs(a), "\x00") == strings.Join(proxyRunArgs(b), "\x00")
}

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
func (c *Config) Image() string {
	if c.Version.IsDigest() {
		return c.Repository + "@" + c.Version.Value
	}
	return c.Repository + ":" + c.Version.Value
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

// helpers

func strOr(n *node, def string) string {
	if n.isScalar() && n.value != "" {
		return scalarString(n)
	}
	return def
}

func intOr(n *node, def int) int {
	if n.isInt() {
		return int(n.intValue())
	}
	return def
}

func optBool(n *node) *bool {
	if !n.isBool() {
		return nil
	}
	v := n.boolValue()
	return &v
}

func optInt(n *node) *int {
	if !n.isInt() {
		return nil
	}
	v := int(n.intValue())
	return &v
}

func optInt64(n *node) *int64 {
	if !n.isInt() {
		return nil
	}
	v := n.intValue()
	return &v
}

// scalarString renders a scalar the way Ruby's to_s would.
func scalarString(n *node) string {
	switch n.tag {
	case "int":
		return strconv.FormatInt(n.intValue(), 10)
	case "bool":
		return strconv.FormatBool(n.boolValue())
	}
	return n.value
}

func kvs(n *node) []KV {
	if !n.isMap() {
		return nil
	}
	out := make([]KV, 0, len(n.keys))
	for i, k := range n.keys {
		out = append(out, KV{k, scalarString(n.vals[i])})
	}
	return out
}

func strs(n *node) []string {
	if !n.isSeq() {
		return nil
	}
	out := make([]string, 0, len(n.items))
	for _, it := range n.items {
		out = append(out, scalarString(it))
	}
	return out
}

func mergeKV(a, b []KV) []KV {
	out := append([]KV(nil), a...)
	for _, kv := range b {
		found := false
		for i := range out {
			if out[i].Key == kv.Key {
				out[i].Value = kv.Value
				found = true
			}
		}
		if !found {
			out = append(out, kv)
		}
	}
	return out
}

func logging(n *node) Logging {
	if n == nil {
		return Logging{}
	}
	return Logging{Driver: n.get("driver").str(), Options: kvs(n.get("options"))}
}

// options decodes an options: map; the restart option is pulled out.
func options(n *node) ([]Option, string) {
	restart := DefaultRestart
	if !n.isMap() {
		return nil, restart
	}
	var out []Option
	for i, k := range n.keys {
		v := n.vals[i]
		if k == "restart" {
			restart = v.str()
			continue
		}
		switch {
		case v.isBool() && v.boolValue():
			out = append(out, Option{Key: k, Flag: true})
		case v.isSeq():
			out = append(out, Option{Key: k, Values: strs(v)})
		case v.isNull():
			out = append(out, Option{Key: k, Flag: true})
		case v.isMap():
			// Ruby would stringify the hash; nobody means that.
			out = append(out, Option{Key: k, Values: []string{v.str()}})
		default:
			out = append(out, Option{Key: k, Values: []string{scalarString(v)}})
		}
	}
	return out, restart
}

func mounts(n *node) []Mount {
	if !n.isSeq() {
		return nil
	}
	var out []Mount
	for _, it := range n.items {
		if it.isMap() {
			out = append(out, Mount{Local: it.get("local").str(), Remote: it.get("remote").str(), Mode: it.get("mode").str(), Owner: it.get("owner").str(), Options: it.get("options").str()})
			continue
		}
		parts := strings.SplitN(scalarString(it), ":", 3)
		m := Mount{Local: parts[0]}
		if len(parts) > 1 {
			m.Remote = parts[1]
		}
		if len(parts) > 2 {
			m.Options = parts[2]
		}
		out = append(out, m)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// versionLess reports whether a < b comparing dotted numeric versions.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
