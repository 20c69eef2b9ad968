package kamal

import (
	"errors"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"
)

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
	ectx := opts.erbContext(fsys)
	budget := maxNodes
	files := []string{opts.ConfigFile}
	if opts.Destination != "" {
		ext := path.Ext(opts.ConfigFile)
		files = append(files, strings.TrimSuffix(opts.ConfigFile, ext)+"."+opts.Destination+ext)
	}
	var merged *node
	broken := false // a file could not be read or parsed (ERB errors alone do not count)
	for _, f := range files {
		n := readConfigFile(fsys, f, ectx, &budget, errs)
		if n == nil {
			broken = true
			continue
		}
		if !n.isMap() {
			errs.at(ErrInvalid, n, "", "the configuration should be a hash (found %s)", n.typeName())
			broken = true
			continue
		}
		if merged == nil {
			merged = n
		} else {
			merged = deepMerge(merged, n)
		}
	}
	if broken || merged == nil {
		return nil, errs.result()
	}
	c := &Config{Destination: opts.Destination, Files: files, merged: merged, key: opts.FingerprintKey}
	b := &builder{c: c, errs: errs, root: merged, opts: opts}
	if b.build() {
		b.checkHooks(fsys)
		b.checkRepoPaths(fsys)
		b.resolveSecrets(fsys)
		if len(errs.errs) == 0 {
			c.checkLineLengths(errs)
		}
	}
	if err := errs.result(); err != nil {
		return nil, err
	}
	return c, nil
}

// readConfigFile reads, renders and parses one file. A failed ERB tag is
// reported and the rest of the file is still parsed, so its structural
// errors are reported too.
// erbContext is what ERB may read: the environment (with
// KAMAL_DESTINATION set as Kamal sets it), the repository and the revision.
func (opts LoadOptions) erbContext(fsys fs.FS) *erbContext {
	lookup := func(name string) (string, bool) {
		if name == "KAMAL_DESTINATION" {
			return opts.Destination, opts.Destination != ""
		}
		if opts.LookupEnv == nil {
			return "", false
		}
		return opts.LookupEnv(name)
	}
	return &erbContext{getenv: lookup, fsys: fsys, revision: opts.Revision, describe: opts.RevisionDescribe, revTime: opts.RevisionTime}
}

func readConfigFile(fsys fs.FS, file string, ectx *erbContext, budget *int, errs *collector) *node {
	f, err := fsys.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			errs.add(ErrMissingFile, file, 0, "", "configuration file not found")
		} else {
			errs.add(ErrMissingFile, file, 0, "", "%s", readProblem(err))
		}
		return nil
	}
	defer f.Close()
	data, err := readLimited(f)
	if err != nil {
		errs.add(ErrTooLarge, file, 0, "", "%v", err)
		return nil
	}
	text, lines, ok := renderERB(file, string(data), ectx, errs)
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
	before := len(b.errs.errs) // ERB errors may precede the structural checks
	v := &validator{errs: b.errs}
	v.checkStruct(root, rootSpec, "")
	v.checkLabels(root.get("labels"), "labels")
	v.checkNUL(root, "")
	v.checkNames(root)
	b.versionBlock()
	b.capstanBlock(root.get("x-capstan"))
	b.sshBlock()
	if len(b.errs.errs) > before {
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
	b.jobs()
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
					b.errs.add(ErrInvalid, xc.kfiles[i], xc.klines[i], joinPath("x-capstan", k), "unknown key (x-capstan supports: version, proxy, haproxy, self_heal, reboot_accessories, stop_unmanaged, rollback, bake, jobs)")
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
