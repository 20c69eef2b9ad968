package kamal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Names Kamal uses on every host.
const (
	ProxyContainer   = "kamal-proxy"
	ProxyConfigVol   = "kamal-proxy-config:/home/kamal-proxy/.config/kamal-proxy"
	ProxyAppsConfig  = ".kamal/proxy/apps-config"
	proxyAppsInProxy = "/home/kamal-proxy/.apps-config"
	// FingerprintLabel is capstan's container label holding the spec
	// fingerprint (hex HMAC-SHA256).
	FingerprintLabel = "capstan.fingerprint"
)

// ErrNoFingerprintKey is returned by Plan when LoadOptions.FingerprintKey
// was empty: fingerprints cover secret values, so they must be keyed.
var ErrNoFingerprintKey = errors.New("kamal: no fingerprint key")

// HostPlan is the desired state of one host: what a fresh host needs, in
// the order Kamal would create it.
type HostPlan struct {
	Host string
	// Network is the docker network every container joins ("kamal").
	Network string
	// Proxy is nil when no proxied role or accessory runs on the host.
	Proxy *ProxyBoot
	// Accessories and Apps are the containers, accessories first (Kamal
	// boots them during setup, before the app).
	Accessories []*Container
	Apps        []*Container
}

// ProxyBoot is the shared kamal-proxy container of a host.
type ProxyBoot struct {
	Image string
	// Legacy is true when no proxy.run block exists: Kamal then reads
	// .kamal/proxy/{options,image,image_version,run_command} on the host;
	// Run shows the result with none of those files present.
	Legacy bool
	// Run is "docker run --name kamal-proxy …" (Kamal runs it as
	// "docker container start kamal-proxy || <Run>").
	Run Command
}

// Container is the desired state of one app or accessory container.
type Container struct {
	// Accessory is true for accessories; Role is then the accessory name.
	Accessory bool
	Role      string
	Name      string
	Image     string
	// Labels are every --label, in order, including service/role/
	// destination and FingerprintLabel.
	Labels []KV
	// Fingerprint is the keyed hash stored in FingerprintLabel: it changes
	// whenever anything that requires re-creating the container changes
	// (image, env including secret values, options, labels, cmd, volumes,
	// logging, restart policy, network). The host name is excluded.
	Fingerprint string
	// EnvFile is uploaded (mode 0600) before Run.
	EnvFile EnvFile
	// Directories are created (mkdir -p) before Run; Files are uploaded
	// from the repository (accessories only).
	Directories []string
	Files       []FileUpload
	// Run is the docker run command.
	Run Command
	// Proxy is nil when the container is not behind kamal-proxy.
	Proxy *ProxyDeploy
	// TLSFiles are the custom certificate and key (proxy.ssl with
	// certificate_pem/private_key_pem), uploaded under
	// .kamal/proxy/apps-config before the proxy deploy. Their content is
	// secret.
	TLSFiles []EnvFile
	// ErrorPages, when set, is the repository directory (error_pages_path)
	// to upload before the proxy deploy, and where.
	ErrorPages *DirUpload
	// StopTimeout is the docker stop -t value, nil for Docker's default.
	StopTimeout *int
}

// EnvFile is a secrets env file on the host, relative to the SSH user's
// home. Content holds secret values and prints as Redacted.
type EnvFile struct {
	Path string
	Mode fs.FileMode
	// Names are the variables in the file, in order (not secret).
	Names   []string
	Content Secret
}

// DirUpload is a repository directory copied to a host directory
// (relative to the SSH user's home).
type DirUpload struct {
	Local, Remote string
}

// DefaultFileMode is the mode Kamal gives uploaded accessory files.
const DefaultFileMode = "755"

// FileUpload is an accessory file: Local in the repository, Remote on the
// host (under HomePrefix).
type FileUpload struct {
	Local, Remote, Mode, Owner string
}

// ProxyDeploy is the kamal-proxy registration of a container.
type ProxyDeploy struct {
	Service string // kamal-proxy service name, S-R[-D] or the accessory service
	AppPort int
	// Args are the flags after --target, in Kamal's order and shape.
	Args []string
}

// Command returns "docker exec kamal-proxy kamal-proxy deploy SERVICE
// --target=ID:PORT …" for the container id the proxy should route to.
func (p *ProxyDeploy) Command(containerID string) Command {
	b := newCmd("docker", "exec", ProxyContainer, "kamal-proxy", "deploy", p.Service)
	b.add(quoteTail, "--target="+containerID+":"+strconv.Itoa(p.AppPort))
	for _, a := range p.Args {
		if strings.Contains(a, "=") {
			b.add(quoteTail, a)
		} else {
			b.add(plain, a)
		}
	}
	return b.build()
}

// Plans returns the plan of every host, in AllHosts order.
func (c *Config) Plans() ([]*HostPlan, error) {
	var out []*HostPlan
	for _, h := range c.AllHosts() {
		p, err := c.Plan(h)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Plan returns the desired state of host h (an empty plan for a host the
// configuration does not mention).
func (c *Config) Plan(h string) (*HostPlan, error) {
	if len(c.key) == 0 {
		return nil, ErrNoFingerprintKey
	}
	if c.secretsSkipped {
		return nil, ErrSecretsSkipped
	}
	p := &HostPlan{Host: h, Network: DefaultNetwork}
	if proxies := c.proxiesOn(h); len(proxies) > 0 {
		p.Proxy = proxyBoot(proxies[0].Run)
	}
	for _, a := range c.Accessories {
		if contains(a.Hosts, h) {
			p.Accessories = append(p.Accessories, c.accessoryContainer(a, h))
		}
	}
	for _, r := range c.Roles {
		if contains(r.Hosts, h) {
			p.Apps = append(p.Apps, c.appContainer(r, h))
		}
	}
	return p, nil
}

// EnvFor returns the clear env and secret refs of role r on host h: root
// env, then the role's, then each tag's of the host.
func (c *Config) EnvFor(r *Role, h string) EnvSpec {
	specs := []EnvSpec{c.rootEnv, r.env}
	for _, t := range r.tags[h] {
		if te, ok := c.tagEnvs[t]; ok {
			specs = append(specs, te)
		}
	}
	return mergeEnv(specs...)
}

func mergeEnv(specs ...EnvSpec) EnvSpec {
	var out EnvSpec
	for _, s := range specs {
		out.Clear = mergeKV(out.Clear, s.Clear)
		for _, ref := range s.Secret {
			dup := false
			for _, have := range out.Secret {
				if have.Name == ref.Name {
					dup = true
				}
			}
			if !dup {
				out.Secret = append(out.Secret, ref)
			}
		}
	}
	return out
}

func (c *Config) envFileContent(e EnvSpec) string {
	var b strings.Builder
	for _, ref := range e.Secret {
		b.WriteString(ref.Name)
		b.WriteByte('=')
		b.WriteString(envFileEscape(c.secret(ref.Key)))
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		return "\n"
	}
	return b.String()
}

func loggingArgs(b *cmdBuilder, l Logging, quoted bool) {
	if l.Driver == "" && len(l.Options) == 0 {
		if quoted {
			b.kv("--log-opt", "max-size", DefaultLogMaxSize)
		} else {
			b.add(plain, "--log-opt", "max-size="+DefaultLogMaxSize)
		}
		return
	}
	if l.Driver != "" {
		b.add(plain, "--log-driver").add(quoteAll, l.Driver)
	}
	for _, kv := range l.Options {
		b.pair("--log-opt", kv)
	}
}

func optionArgs(b *cmdBuilder, opts []Option) {
	for _, o := range opts {
		if o.Flag {
			b.add(plain, "--"+o.Key)
			continue
		}
		for _, v := range o.Values {
			b.add(plain, "--"+o.Key).add(quoteAll, v)
		}
	}
}

func (c *Config) appContainer(r *Role, h string) *Container {
	name := c.ContainerName(r)
	env := c.EnvFor(r, h)
	ct := &Container{Role: r.Name, Name: name, Image: c.Image(), StopTimeout: r.StopTimeout}
	ct.EnvFile = c.roleEnvFile(r, env)
	ct.Directories = []string{c.AppDir() + "/env/roles"}
	if r.StopTimeout == nil && r.Proxy == nil {
		v := c.DrainTimeout
		ct.StopTimeout = &v
	}

	ct.Labels = []KV{{Key: "service", Value: c.Service}, {Key: "role", Value: r.Name}, {Key: "destination", Value: c.Destination}}
	ct.Labels = append(ct.Labels, asDocker(r.Labels)...)

	build := func(hostname string, withFingerprint bool) Command {
		b := newCmd("docker", "run", "--detach", "--restart", r.Restart, "--name", name, "--network", DefaultNetwork)
		if hostname != "" {
			b.add(plain, "--hostname", hostname)
		}
		b.kv("--env", "KAMAL_CONTAINER_NAME", name)
		b.kv("--env", "KAMAL_VERSION", c.Version.Name())
		b.kv("--env", "KAMAL_HOST", h)
		if c.Destination != "" {
			b.kv("--env", "KAMAL_DESTINATION", c.Destination)
		}
		roleEnvArgs(b, env, ct.EnvFile.Path)
		loggingArgs(b, r.Logging, true)
		c.volumeArgs(b)
		if r.AssetPath != "" && r.Proxy != nil {
			b.volume(HomePrefix + c.AppDir() + "/assets/volumes/" + r.Name + "-" + c.Version.Name() + ":" + r.AssetPath)
		}
		for _, kv := range ct.Labels {
			if kv.Key != FingerprintLabel {
				b.pair("--label", kv)
			}
		}
		if withFingerprint {
			b.kv("--label", FingerprintLabel, ct.Fingerprint)
		}
		optionArgs(b, r.Options)
		b.add(plain, c.Image())
		b.add(shellWord, r.cmdArgs...)
		return b.build()
	}
	ct.Fingerprint = c.fingerprint(build("", false).Argv, ct.EnvFile.Content.Reveal())
	ct.Labels = append(ct.Labels, KV{Key: FingerprintLabel, Value: ct.Fingerprint})
	ct.Run = build(hostname(h, name), true)
	if r.Proxy != nil {
		ct.Proxy = &ProxyDeploy{Service: c.Prefix(r), AppPort: r.Proxy.AppPort, Args: c.proxyArgs(r.Proxy, path.Join(proxyAppsInProxy, c.NamePrefix(), "tls", r.Name))}
		c.proxyFiles(ct, r.Proxy, path.Join(ProxyAppsConfig, c.NamePrefix(), "tls", r.Name))
	}
	return ct
}

func (c *Config) accessoryContainer(a *Accessory, h string) *Container {
	env := mergeEnv(a.env)
	ct := &Container{Accessory: true, Role: a.Name, Name: a.Service, Image: a.Image}
	ct.EnvFile = EnvFile{Path: c.AppDir() + "/env/accessories/" + a.Name + ".env", Mode: 0o600, Names: secretNames(env), Content: NewSecret(c.envFileContent(env))}
	ct.Directories = []string{c.AppDir() + "/env/accessories"}
	var volumes []string
	volumes = append(volumes, a.Volumes...)
	for _, f := range a.Files {
		remote := HomePrefix + a.Service + "/" + strings.TrimPrefix(f.Remote, "/")
		mode := f.Mode
		if mode == "" {
			mode = DefaultFileMode
		}
		ct.Files = append(ct.Files, FileUpload{Local: f.Local, Remote: remote, Mode: mode, Owner: f.Owner})
		volumes = append(volumes, withOpts(remote+":"+f.Remote, f.Options))
	}
	for _, d := range a.Directories {
		local := d.Local
		if !strings.HasPrefix(local, "/") {
			local = HomePrefix + a.Service + "/" + local
		}
		ct.Directories = append(ct.Directories, local)
		volumes = append(volumes, withOpts(local+":"+d.Remote, d.Options))
	}
	ct.Labels = append([]KV{{Key: "service", Value: a.Service}}, asDocker(a.Labels)...)
	build := func(withFingerprint bool) Command {
		b := newCmd("docker", "run", "--name", a.Service, "--detach", "--restart", a.Restart, "--network", a.Network)
		loggingArgs(b, c.Logging, true)
		if a.Port != "" {
			port := a.Port
			if !strings.Contains(port, ":") {
				port = port + ":" + port
			}
			b.add(plain, "--publish", port)
		}
		b.kv("--env", "KAMAL_HOST", h)
		for _, kv := range env.Clear {
			b.pair("--env", kv)
		}
		b.add(plain, "--env-file", ct.EnvFile.Path)
		for _, v := range volumes {
			b.volume(v)
		}
		for _, kv := range ct.Labels {
			if kv.Key != FingerprintLabel {
				b.pair("--label", kv)
			}
		}
		if withFingerprint {
			b.kv("--label", FingerprintLabel, ct.Fingerprint)
		}
		optionArgs(b, a.Options)
		b.add(plain, a.Image)
		b.add(shellWord, a.cmdArgs...)
		return b.build()
	}
	ct.Fingerprint = c.fingerprint(build(false).Argv, ct.EnvFile.Content.Reveal())
	ct.Labels = append(ct.Labels, KV{Key: FingerprintLabel, Value: ct.Fingerprint})
	ct.Run = build(true)
	if a.Proxy != nil {
		ct.Proxy = &ProxyDeploy{Service: a.Service, AppPort: a.Proxy.AppPort, Args: c.proxyArgs(a.Proxy, path.Join(proxyAppsInProxy, a.Service, "tls"))}
		c.proxyFiles(ct, a.Proxy, path.Join(ProxyAppsConfig, a.Service, "tls"))
	}
	return ct
}

// proxyFiles adds the custom TLS files and error pages of a proxied
// container. tlsDir is the host directory matching proxyArgs' paths.
func (c *Config) proxyFiles(ct *Container, p *Proxy, tlsDir string) {
	if p.CustomCert() {
		ct.Directories = append(ct.Directories, tlsDir)
		ct.TLSFiles = []EnvFile{
			{Path: tlsDir + "/cert.pem", Mode: 0o644, Names: []string{p.CertificatePEM}, Content: NewSecret(c.secret(p.CertificatePEM))},
			{Path: tlsDir + "/key.pem", Mode: 0o644, Names: []string{p.PrivateKeyPEM}, Content: NewSecret(c.secret(p.PrivateKeyPEM))},
		}
	}
	if c.ErrorPagesPath != "" {
		ct.ErrorPages = &DirUpload{Local: c.ErrorPagesPath, Remote: path.Join(ProxyAppsConfig, c.NamePrefix(), "error_pages", c.Version.Name())}
	}
}

func withOpts(v, opts string) string {
	if opts != "" {
		return v + ":" + opts
	}
	return v
}

// hostname is Kamal's container hostname: the first 51 characters of the
// host, "-", and 12 hex digits. Kamal picks the digits at random; capstan
// derives them from host and container name so plans are reproducible.
func hostname(h, container string) string {
	sum := sha256.Sum256([]byte(h + "\x00" + container))
	if len(h) > 51 {
		h = h[:51]
	}
	return h + "-" + hex.EncodeToString(sum[:])[:12]
}

// fingerprint is "KEYID.HMAC": HMAC-SHA256 keyed with the capstan key over
// the run argv (without hostname and fingerprint label) and the env file
// content, after the key's id (FingerprintKeyID). Two capstans with
// different keys (two daemons, each with its own state directory) compute
// different fingerprints for the same spec; the id tells them so, and they
// compare such a container by what it runs instead.
func (c *Config) fingerprint(argv []string, envFile string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("capstan-spec-v1\x00"))
	for _, a := range argv {
		m.Write([]byte(strconv.Itoa(len(a))))
		m.Write([]byte{':'})
		m.Write([]byte(a))
	}
	m.Write([]byte("\x00env\x00"))
	m.Write([]byte(envFile))
	id := sha256.Sum256(append([]byte("capstan-key-id\x00"), c.key...))
	return hex.EncodeToString(id[:4]) + "." + hex.EncodeToString(m.Sum(nil))
}

// FingerprintKeyID is the id of the key a fingerprint was made with, ""
// for one made before fingerprints carried it. Fingerprints with the same
// id can be compared; others say nothing about each other.
func FingerprintKeyID(fp string) string {
	id, _, ok := strings.Cut(fp, ".")
	if !ok {
		return ""
	}
	return id
}

func secs(v int) string { return strconv.Itoa(v) + "s" }

// proxyArgs are the kamal-proxy deploy flags after --target, in Kamal's
// order (lib/kamal/configuration/proxy.rb deploy_options).
func (c *Config) proxyArgs(p *Proxy, tlsDir string) []string {
	var a []string
	flag := func(k string, v string) { a = append(a, "--"+k+"="+v) }
	boolFlag := func(k string, v *bool) {
		if v == nil {
			return
		}
		if *v {
			a = append(a, "--"+k)
		} else {
			flag(k, "false")
		}
	}
	for _, h := range p.Hosts {
		flag("host", h)
	}
	if p.SSL {
		a = append(a, "--tls")
	}
	if p.CustomCert() {
		flag("tls-certificate-path", tlsDir+"/cert.pem")
		flag("tls-private-key-path", tlsDir+"/key.pem")
	}
	flag("deploy-timeout", secs(c.DeployTimeout))
	flag("drain-timeout", secs(c.DrainTimeout))
	if v := p.Healthcheck.Interval; v != nil {
		flag("health-check-interval", secs(*v))
	}
	if v := p.Healthcheck.Timeout; v != nil {
		flag("health-check-timeout", secs(*v))
	}
	if p.Healthcheck.Path != "" {
		flag("health-check-path", p.Healthcheck.Path)
	}
	if v := p.ResponseTimeout; v != nil {
		flag("target-timeout", secs(*v))
	}
	br, bs := p.BufferRequests, p.BufferResponses
	boolFlag("buffer-requests", &br)
	boolFlag("buffer-responses", &bs)
	if v := p.BufferMemory; v != nil {
		flag("buffer-memory", strconv.FormatInt(*v, 10))
	}
	if v := p.MaxRequestBody; v != nil {
		flag("max-request-body", strconv.FormatInt(*v, 10))
	}
	if v := p.MaxResponseBody; v != nil {
		flag("max-response-body", strconv.FormatInt(*v, 10))
	}
	for _, pp := range p.PathPrefixes {
		flag("path-prefix", pp)
	}
	boolFlag("strip-path-prefix", p.StripPathPrefix)
	boolFlag("forward-headers", p.ForwardHeaders)
	boolFlag("tls-redirect", p.SSLRedirect)
	for _, h := range p.LogRequestHeaders {
		flag("log-request-header", h)
	}
	for _, h := range p.LogResponseHeaders {
		flag("log-response-header", h)
	}
	if c.ErrorPagesPath != "" {
		flag("error-pages", path.Join(proxyAppsInProxy, c.NamePrefix(), "error_pages", c.Version.Name()))
	}
	return a
}

// proxyRunArgs are the docker run options of kamal-proxy that come from
// proxy.run (publish, logging, expose, options).
func proxyRunArgs(r *ProxyRun) []string {
	if r == nil {
		r = &ProxyRun{HTTPPort: DefaultProxyHTTPPort, HTTPSPort: DefaultProxyHTTPSPort, LogMaxSize: DefaultLogMaxSize, Publish: true, Repository: DefaultProxyRepository, Version: DefaultProxyVersion}
	}
	var a []string
	if r.Publish {
		if len(r.BindIPs) == 0 {
			a = append(a, "--publish", strconv.Itoa(r.HTTPPort)+":80", "--publish", strconv.Itoa(r.HTTPSPort)+":443")
		}
		for _, ip := range r.BindIPs {
			if strings.Contains(ip, ":") {
				ip = "[" + ip + "]"
			}
			a = append(a, "--publish", ip+":"+strconv.Itoa(r.HTTPPort)+":80", "--publish", ip+":"+strconv.Itoa(r.HTTPSPort)+":443")
		}
	}
	a = append(a, "--log-opt", "max-size="+r.LogMaxSize)
	if r.MetricsPort != 0 {
		a = append(a, "--expose="+strconv.Itoa(r.MetricsPort))
	}
	for _, o := range r.Options {
		if o.Flag {
			a = append(a, "--"+o.Key)
			continue
		}
		for _, v := range o.Values {
			a = append(a, "--"+o.Key, v)
		}
	}
	a = append(a, "\x00") // separator between options and the run command
	a = append(a, r.Image(), "kamal-proxy", "run")
	if r.Debug {
		a = append(a, "--debug")
	}
	if r.MetricsPort != 0 {
		a = append(a, "--metrics-port", strconv.Itoa(r.MetricsPort))
	}
	return a
}

func proxyBoot(r *ProxyRun) *ProxyBoot {
	pb := &ProxyBoot{Legacy: r == nil}
	b := newCmd("docker", "run", "--name", ProxyContainer, "--network", DefaultNetwork, "--detach", "--restart", "unless-stopped")
	b.volume(ProxyConfigVol).volume(HomePrefix + ProxyAppsConfig + ":" + proxyAppsInProxy)
	args := proxyRunArgs(r)
	for i, a := range args {
		if a == "\x00" {
			pb.Image = args[i+1]
			continue
		}
		if i > 0 && args[i-1] == "--metrics-port" {
			b.add(quoteAll, a)
			continue
		}
		b.add(plain, a)
	}
	pb.Run = b.build()
	return pb
}

func secretNames(e EnvSpec) []string {
	var out []string
	for _, r := range e.Secret {
		out = append(out, r.Name)
	}
	return out
}

// ContainerIDPlaceholder stands for the container id in rendered proxy
// deploy commands (it is only known once the container runs).
const ContainerIDPlaceholder = "<container-id>"

// WriteScript writes, for each plan, the commands capstan would run on a
// fresh host, one per line, as Kamal prints them. Env file contents are
// shown with values masked. The output contains no secret values.
func WriteScript(w io.Writer, plans []*HostPlan) error {
	var b strings.Builder
	for i, p := range plans {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "# host %s\n", p.Host)
		fmt.Fprintf(&b, "docker network create %s\n", p.Network)
		if p.Proxy != nil {
			fmt.Fprintf(&b, "mkdir -p %s\n", ProxyAppsConfig)
			fmt.Fprintf(&b, "docker container start %s || %s\n", ProxyContainer, p.Proxy.Run)
		}
		for _, ct := range append(append([]*Container(nil), p.Accessories...), p.Apps...) {
			for _, d := range ct.Directories {
				fmt.Fprintf(&b, "mkdir -p %s\n", ShellQuote(d))
			}
			for _, f := range ct.Files {
				fmt.Fprintf(&b, "# upload %s to %s\n", f.Local, f.Remote)
			}
			fmt.Fprintf(&b, "# write %s (mode %04o):", ct.EnvFile.Path, ct.EnvFile.Mode)
			if len(ct.EnvFile.Names) == 0 {
				b.WriteString(" (empty)")
			}
			for _, n := range ct.EnvFile.Names {
				fmt.Fprintf(&b, " %s=%s", n, Redacted)
			}
			b.WriteByte('\n')
			b.WriteString(ct.Run.String())
			b.WriteByte('\n')
			for _, f := range ct.TLSFiles {
				fmt.Fprintf(&b, "# write %s (mode %04o): %s\n", f.Path, f.Mode, Redacted)
			}
			if ct.ErrorPages != nil {
				fmt.Fprintf(&b, "# upload %s/ to %s/\n", ct.ErrorPages.Local, ct.ErrorPages.Remote)
			}
			if ct.Proxy != nil {
				b.WriteString(ct.Proxy.Command(ContainerIDPlaceholder).String())
				b.WriteByte('\n')
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
