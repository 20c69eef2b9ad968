package kamal

import (
	"errors"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Names and values from the repository end up in container names, in
// paths on hosts, in docker flags and in env files. capstan runs argv (one
// function quotes it for the remote shell, hostexec.Quote), so values are
// carried to Docker byte for byte. What cannot be carried that way is
// refused at load, with the file, line and key:
//
//   - a NUL byte in any key or value: no exec argument can hold one;
//   - role and accessory names outside Docker's container name alphabet
//     ([A-Za-z0-9][A-Za-z0-9_.-]*): they become container names, proxy
//     service names and file names on hosts, so a "/" or a space would make
//     a bad container name or leave the app's directory;
//   - hosts with white space, control characters, shell metacharacters or
//     a leading "-": a host is an SSH target, a state key and a log field;
//   - env, label and log option names that are empty or hold "=", white
//     space or control characters: Docker splits NAME=value at the first
//     "=", so such a name would set another variable or label; a docker
//     option name (options:) that starts with "-" or holds "=": the
//     option and its value would be parsed differently;
//   - accessory files and directories that leave the repository (the
//     local side of files) or the accessory's directory on the host (see
//     checkMounts), and an error_pages_path outside the repository.
//
// Kamal itself checks only the service name (/^[a-z0-9_-]+$/i, which Ruby
// anchors at line ends, so it lets "app\n…" through; capstan does not).

var (
	reName          = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	reContainerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]+$`)
	reHost          = regexp.MustCompile(`^[A-Za-z0-9\[][A-Za-z0-9_.:%@\[\]-]*$`)
)

// Longest names accepted: a role or accessory name ends up in a file name
// on the host (NAME.env, at most 255 bytes with the rest), a host name has
// at most 253 characters (plus user@ and :port).
const (
	maxNameLen = 128
	maxHostLen = 512
)

// nameRule says why s is not a valid name of the kind given ("" when it is).
func nameRule(kind, s string) string {
	switch {
	case (kind == "role" || kind == "accessory" || kind == "container") && len(s) > maxNameLen:
		return kind + " name longer than " + strconv.Itoa(maxNameLen) + " bytes (it becomes a container name and a file name on the hosts)"
	case kind == "host" && len(s) > maxHostLen:
		return "host longer than " + strconv.Itoa(maxHostLen) + " bytes"
	}
	switch kind {
	case "role", "accessory":
		if !reName.MatchString(s) {
			return "invalid " + kind + " name: use letters, digits, _ . and - (starting with a letter or digit); it becomes part of container names and of file names on the hosts"
		}
	case "container":
		if !reContainerName.MatchString(s) {
			return "invalid container name: Docker allows [a-zA-Z0-9][a-zA-Z0-9_.-]+"
		}
	case "host":
		if !reHost.MatchString(s) {
			return "invalid host: use a host name or IP address ([user@]host[:port]), without white space, shell characters or a leading \"-\""
		}
	case "image":
		if s == "" || s[0] == '-' || hasSpaceOrControl(s) {
			return "invalid image reference: it may not start with \"-\" (Docker would read it as an option) or hold white space or control characters"
		}
	case "option":
		if s == "" || s[0] == '-' || strings.ContainsRune(s, '=') || hasSpaceOrControl(s) {
			return "invalid docker option name: write it without leading dashes, \"=\", white space or control characters (value: separately)"
		}
	default: // env, label, log option: NAME=value pairs
		switch {
		case s == "":
			return "empty " + kind + " name"
		case strings.ContainsRune(s, '='):
			return "invalid " + kind + " name: it contains \"=\", so Docker would split NAME=value elsewhere"
		case hasSpaceOrControl(s):
			return "invalid " + kind + " name: it contains white space or a control character"
		}
	}
	return ""
}

func hasSpaceOrControl(s string) bool {
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return true
		}
	}
	return false
}

// checkNUL reports every key and scalar of the tree that holds a NUL byte.
func (v *validator) checkNUL(n *node, p string) {
	switch {
	case n.isMap():
		for i, k := range n.keys {
			kp := joinPath(p, k)
			if strings.IndexByte(k, 0) >= 0 {
				v.errs.add(ErrInvalid, n.kfiles[i], n.klines[i], kp, "key contains a NUL byte, which no command argument can carry")
				continue
			}
			v.checkNUL(n.vals[i], kp)
		}
	case n.isSeq():
		for i, it := range n.items {
			v.checkNUL(it, indexPath(p, i))
		}
	case n.isScalar() && strings.IndexByte(n.value, 0) >= 0:
		v.errs.at(ErrInvalid, n, p, "value contains a NUL byte, which no command argument can carry")
	}
}

// checkNames applies nameRule to every name of the tree that reaches a
// host. It runs after the schema check, so shapes are as expected where
// it looks (and it looks only where they are).
func (v *validator) checkNames(root *node) {
	v.image(root.get("image"), "image")
	v.image(root.get("registry").get("server"), "registry.server")
	v.proxyRun(root.get("proxy"), "proxy")
	v.keys(root.get("labels"), "labels", "label")
	v.logOpts(root.get("logging"), "logging")
	v.env(root.get("env"), "env")
	if s := root.get("servers"); s.isSeq() {
		v.hosts(s, "servers")
	} else if s.isMap() {
		for i, name := range s.keys {
			p := joinPath("servers", name)
			v.name(s.kfiles[i], s.klines[i], p, "role", name)
			rn := s.vals[i]
			if rn.isSeq() {
				v.hosts(rn, p)
				continue
			}
			v.hosts(rn.get("hosts"), joinPath(p, "hosts"))
			v.keys(rn.get("labels"), joinPath(p, "labels"), "label")
			v.keys(rn.get("options"), joinPath(p, "options"), "option")
			v.proxyRun(rn.get("proxy"), joinPath(p, "proxy"))
			v.logOpts(rn.get("logging"), joinPath(p, "logging"))
			v.env(rn.get("env"), joinPath(p, "env"))
		}
	}
	acc := root.get("accessories")
	if !acc.isMap() {
		return
	}
	for i, name := range acc.keys {
		p := joinPath("accessories", name)
		v.name(acc.kfiles[i], acc.klines[i], p, "accessory", name)
		an := acc.vals[i]
		if s := an.get("service"); s.isScalar() {
			v.name(s.file, s.line, joinPath(p, "service"), "container", scalarString(s))
		}
		if h := an.get("host"); h.isScalar() {
			v.name(h.file, h.line, joinPath(p, "host"), "host", scalarString(h))
		}
		v.hosts(an.get("hosts"), joinPath(p, "hosts"))
		v.keys(an.get("labels"), joinPath(p, "labels"), "label")
		v.keys(an.get("options"), joinPath(p, "options"), "option")
		v.proxyRun(an.get("proxy"), joinPath(p, "proxy"))
		v.image(an.get("image"), joinPath(p, "image"))
		v.image(an.get("registry").get("server"), joinPath(p, "registry.server"))
		v.env(an.get("env"), joinPath(p, "env"))
		v.checkMounts(an.get("files"), joinPath(p, "files"), true)
		v.checkMounts(an.get("directories"), joinPath(p, "directories"), false)
	}
}

func (v *validator) name(file string, line int, p, kind, s string) {
	if msg := nameRule(kind, s); msg != "" {
		v.errs.add(ErrInvalid, file, line, p, "%s", msg)
	}
}

// keys checks the keys of map n as names of the given kind.
func (v *validator) keys(n *node, p, kind string) {
	if !n.isMap() {
		return
	}
	for i, k := range n.keys {
		v.name(n.kfiles[i], n.klines[i], joinPath(p, k), kind, k)
	}
}

// image checks an image reference; an empty one is reported as missing
// by the builder.
func (v *validator) image(n *node, p string) {
	if n.isScalar() && n.value != "" {
		v.name(n.file, n.line, p, "image", scalarString(n))
	}
}

// proxyRun checks the docker option names of a proxy block's run.options.
func (v *validator) proxyRun(n *node, p string) {
	v.keys(n.get("run").get("options"), joinPath(p, "run.options"), "option")
}

func (v *validator) logOpts(n *node, p string) {
	v.keys(n.get("options"), joinPath(p, "options"), "log option")
}

// hosts checks a hosts list (plain or tagged items).
func (v *validator) hosts(n *node, p string) {
	if !n.isSeq() {
		return
	}
	for i, it := range n.items {
		switch {
		case it.isScalar() && strings.TrimSpace(it.value) != "": // blank: checkHosts
			v.name(it.file, it.line, indexPath(p, i), "host", scalarString(it))
		case it.isMap() && len(it.keys) == 1:
			v.name(it.kfiles[0], it.klines[0], indexPath(p, i), "host", it.keys[0])
		}
	}
}

// env checks the variable names of an env block: a plain map, or
// clear/secret (NAME or NAME:SECRET_KEY) and tags.
func (v *validator) env(n *node, p string) {
	if !n.isMap() {
		return
	}
	if !(n.has("clear") || n.has("secret") || n.has("tags")) {
		v.keys(n, p, "env")
		return
	}
	v.keys(n.get("clear"), joinPath(p, "clear"), "env")
	if s := n.get("secret"); s.isSeq() {
		for i, it := range s.items {
			name, _, _ := strings.Cut(scalarString(it), ":")
			if name != "" { // an empty one is reported by envSpec
				v.name(it.file, it.line, indexPath(joinPath(p, "secret"), i), "env", name)
			}
		}
	}
	if t := n.get("tags"); t.isMap() {
		for i, tag := range t.keys {
			v.env(t.vals[i], joinPath(joinPath(p, "tags"), tag))
		}
	}
}

// checkMounts checks accessory files (files true) or directories entries,
// "local:remote[:options]" or {local, remote, …}. Kamal uploads a file
// from local (relative to where kamal runs) to ~/SERVICE/REMOTE on the
// host and mounts it at REMOTE in the container; a directory is made at
// ~/SERVICE/LOCAL (or at LOCAL when it is absolute) and mounted at REMOTE.
// capstan reads only the repository, so a file's local path must be
// relative and stay inside it (that it exists there, without a symbolic
// link leading out, is checked by checkRepoPaths); the host-side paths
// must stay in the accessory's directory (no ".." element; an absolute
// directory is the operator's explicit choice, as in Kamal); REMOTE is a
// path in the container and must be absolute, as Docker requires.
func (v *validator) checkMounts(n *node, p string, files bool) {
	if !n.isSeq() {
		return
	}
	for i, it := range n.items {
		ip := indexPath(p, i)
		m := mountOf(it)
		if m.Local == "" || m.Remote == "" {
			continue // reported by the accessory builder
		}
		switch {
		case files && (path.IsAbs(m.Local) || hasDotDot(m.Local)):
			v.errs.at(ErrInvalid, it, ip, "local file %q is outside the repository: use a path relative to the repository root, without ..", m.Local)
		case !files && hasDotDot(m.Local):
			v.errs.at(ErrInvalid, it, ip, "host directory %q leaves the accessory's directory: remove the .. (or give an absolute host path)", m.Local)
		}
		switch {
		case !path.IsAbs(m.Remote):
			v.errs.at(ErrInvalid, it, ip, "remote %q should be an absolute path in the container", m.Remote)
		case hasDotDot(m.Remote):
			v.errs.at(ErrInvalid, it, ip, "remote %q has a .. element: the file on the host would leave the accessory's directory", m.Remote)
		}
	}
}

// mountOf decodes one files/directories entry like mounts does.
func mountOf(it *node) Mount {
	m := mounts(&node{kind: seqNode, items: []*node{it}})
	if len(m) == 0 {
		return Mount{}
	}
	return m[0]
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// checkRepoPaths checks the repository paths the configuration names
// (accessory files, error_pages_path) in fsys. With LoadDir, fsys is
// confined to the checkout: a path whose symbolic link leads outside is
// reported here, and nothing outside is opened. A missing path is not an
// error here (Kamal fails only when it uploads).
func (b *builder) checkRepoPaths(fsys fs.FS) {
	if ep := b.root.get("error_pages_path"); ep.isScalar() && ep.value != "" {
		d := scalarString(ep)
		if path.IsAbs(d) || hasDotDot(d) {
			b.err(ep, "error_pages_path", "%q is outside the repository: use a path relative to the repository root, without ..", d)
		} else if fi, err := fs.Stat(fsys, path.Clean(d)); err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // missing: Kamal fails when it uploads
				b.err(ep, "error_pages_path", "%s", repoPathErr(d, err))
			}
		} else if !fi.IsDir() {
			b.err(ep, "error_pages_path", "%q is not a directory", d)
		}
	}
	acc := b.root.get("accessories")
	if !acc.isMap() {
		return
	}
	for i, name := range acc.keys {
		files := acc.vals[i].get("files")
		if !files.isSeq() {
			continue
		}
		for j, it := range files.items {
			m := mountOf(it)
			if m.Local == "" || path.IsAbs(m.Local) || hasDotDot(m.Local) {
				continue // reported by checkMounts
			}
			ip := indexPath(joinPath(joinPath("accessories", name), "files"), j)
			if fi, err := fs.Stat(fsys, path.Clean(m.Local)); err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					b.err(it, ip, "%s", repoPathErr(m.Local, err))
				}
			} else if !fi.Mode().IsRegular() {
				b.err(it, ip, "local file %q is not a regular file", m.Local)
			}
		}
	}
}

// repoPathErr explains why a repository path could not be used, without
// quoting anything read from it.
func repoPathErr(p string, err error) string {
	return strconv.Quote(p) + " " + readProblem(err)
}

// readProblem says why a repository file could not be read: os.Root
// refuses a path that a symbolic link (or "..") leads out of the
// checkout.
func readProblem(err error) string {
	if strings.Contains(err.Error(), "path escapes from parent") {
		return "leads outside the repository (a symbolic link), which capstan does not follow"
	}
	return "cannot be read: " + err.Error()
}

// MaxCommandLine bounds the length of a remote command line. sshd hands
// the whole line to the login shell as a single argument, and Linux
// limits one argument to 128 KiB; the rest is room for what capstan wraps
// around a docker run.
const MaxCommandLine = 120 << 10

// checkLineLengths reports a container whose docker run or kamal-proxy
// deploy line, quoted for the shell, would be longer than MaxCommandLine:
// each value fits, but together they would make the host refuse the
// command at deploy time. Env file contents are not on the line.
func (c *Config) checkLineLengths(errs *collector) {
	cc := *c
	cc.key, cc.secretsSkipped = []byte("length check"), false
	plans, err := cc.Plans()
	if err != nil {
		return
	}
	for _, p := range plans {
		for _, ct := range append(slices.Clone(p.Accessories), p.Apps...) {
			lines := []Command{ct.Run}
			if ct.Proxy != nil {
				lines = append(lines, ct.Proxy.Command(ContainerIDPlaceholder))
			}
			for _, cmd := range lines {
				if n := len(ShellLine(cmd.Argv)); n > MaxCommandLine {
					errs.add(ErrTooLarge, c.Files[0], 0, "", "the %s %s command of %s would be %d bytes long, more than a remote command line can hold (%d); shorten its longest values", cmd.Argv[0], cmd.Argv[1], ct.Name, n, MaxCommandLine)
				}
			}
		}
	}
}
