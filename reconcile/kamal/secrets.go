package kamal

import (
	"errors"
	"io"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"github.com/capstan-dev/capstan/internal/redact"
)

var fsEOF = io.EOF

// dotenvEntry is one KEY=value of a secrets file.
type dotenvEntry struct {
	value   string
	line    int
	problem error // why the value is unusable (refused command, unset variable)
	kind    error // sentinel for problem
}

type dotenvFile struct {
	name    string
	entries map[string]*dotenvEntry
}

var (
	reDotenvKey = regexp.MustCompile(`^(?:export\s+)?([\w.]+)(?:\s*=\s*|:\s+)(.*)$`)
	reDotenvVar = regexp.MustCompile(`(\\)?\$(\{([A-Z0-9_]+)\}|([A-Z0-9_]+))`)
)

// parseDotenv parses a secrets file in dotenv 3.x syntax. lookup resolves
// $VAR from outside the file. run evaluates $(command), nil = refused.
func parseDotenv(file, text string, lookup func(string) (string, bool), run func(string) (string, error), errs *collector) *dotenvFile {
	df := &dotenvFile{name: file, entries: map[string]*dotenvEntry{}}
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := reDotenvKey.FindStringSubmatch(line)
		if m == nil {
			errs.add(ErrSyntax, file, lineNo, "", "not a KEY=value line")
			continue
		}
		key, raw := m[1], strings.TrimLeft(m[2], " \t")
		var value string
		quote := byte(0)
		if raw != "" && (raw[0] == '\'' || raw[0] == '"' || raw[0] == '`') {
			quote = raw[0]
			body := raw[1:]
			// Find the closing quote, possibly on a later line.
			for {
				end := closingQuote(body, quote)
				if end >= 0 {
					value = body[:end]
					rest := strings.TrimSpace(body[end+1:])
					if rest != "" && !strings.HasPrefix(rest, "#") {
						errs.add(ErrSyntax, file, lineNo, key, "unexpected text after the closing quote")
					}
					break
				}
				if i+1 >= len(lines) {
					errs.add(ErrSyntax, file, lineNo, key, "unterminated quoted value")
					value = body
					break
				}
				i++
				body += "\n" + lines[i]
			}
		} else {
			if k := strings.IndexByte(raw, '#'); k >= 0 {
				raw = raw[:k]
			}
			value = strings.TrimSpace(raw)
		}
		e := &dotenvEntry{line: lineNo}
		switch quote {
		case '\'':
			e.value = value
		default:
			if quote == '"' {
				value = strings.NewReplacer(`\n`, "\n", `\r`, "\r").Replace(value)
				value = regexp.MustCompile(`\\([^$])`).ReplaceAllString(value, "$1")
			}
			raw := value
			e.value = expandVars(value, func(name string) (string, bool) {
				if prev, ok := df.entries[name]; ok {
					if prev.problem != nil && e.problem == nil {
						e.problem, e.kind = prev.problem, prev.kind
					}
					return prev.value, true
				}
				return lookup(name)
			}, e)
			e.value = expandCommands(e.value, commandTexts(raw), run, e)
			e.value = strings.ReplaceAll(e.value, `\$`, "$")
		}
		df.entries[key] = e
	}
	return df
}

func closingQuote(s string, q byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == q {
			return i
		}
	}
	return -1
}

// expandVars replaces $VAR and ${VAR} (not $( ), leaving \$ escapes.
func expandVars(v string, lookup func(string) (string, bool), e *dotenvEntry) string {
	return reDotenvVar.ReplaceAllStringFunc(v, func(m string) string {
		if strings.HasPrefix(m, `\`) {
			return m
		}
		sub := reDotenvVar.FindStringSubmatch(m)
		name := sub[3]
		if name == "" {
			name = sub[4]
		}
		val, ok := lookup(name)
		if !ok && e.problem == nil {
			e.problem = errors.New("$" + name + " is not set in capstan's environment or the secrets env file (--secrets-env-file)")
			e.kind = ErrSecret
		}
		return val
	})
}

// expandCommands evaluates $(command) with run, or records a refusal.
// raw holds the commands as written in the file (before $VAR expansion);
// messages quote those so they never contain a secret value.
func expandCommands(v string, raw []string, run func(string) (string, error), e *dotenvEntry) string {
	var out strings.Builder
	n := 0
	display := func() string {
		if n < len(raw) {
			return abbreviate(raw[n])
		}
		return "…"
	}
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == '$' {
			out.WriteString(`\$`)
			i++
			continue
		}
		if v[i] == '$' && i+1 < len(v) && v[i+1] == '(' {
			j := closingParen(v, i+1)
			if j >= len(v) {
				out.WriteString(v[i:])
				break
			}
			cmd := v[i+2 : j]
			shown := display()
			n++
			if run == nil {
				if e.problem == nil || !errors.Is(e.kind, ErrUnsafe) {
					e.problem = errors.New("command substitution $(" + shown + ") is refused: capstan does not run commands from the repository; put the value in capstan's environment or the --secrets-env-file and write $NAME, or start capstan with --allow-secret-commands")
					e.kind = ErrUnsafe
				}
			} else {
				res, err := run(cmd)
				if err != nil && e.problem == nil {
					e.problem = errors.New("command substitution $(" + shown + ") failed: " + redactErr(err, cmd))
					e.kind = ErrSecret
				}
				out.WriteString(strings.TrimRight(res, "\n"))
			}
			i = j
			continue
		}
		out.WriteByte(v[i])
	}
	return out.String()
}

// secretFiles returns the secrets files Kamal reads, in precedence order
// (later overrides earlier).
func (c *Config) secretFiles() []string {
	base := c.SecretsPath
	if c.Destination != "" {
		return []string{base + "-common", base + "." + c.Destination}
	}
	return []string{base + "-common", base}
}

// resolveSecrets reads the secrets files and resolves every reference.
func (b *builder) resolveSecrets(fsys fs.FS) {
	c := b.c
	c.secrets = map[string]string{}
	if len(b.refs) == 0 {
		return
	}
	lookup := func(name string) (string, bool) {
		if v, ok := b.opts.SecretsEnv[name]; ok {
			return v, true
		}
		if b.opts.LookupEnv != nil {
			return b.opts.LookupEnv(name)
		}
		return "", false
	}
	files := c.secretFiles()
	var parsed []*dotenvFile
	for _, f := range files {
		fh, err := fsys.Open(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // missing files are fine until a secret is requested
		}
		if err != nil { // e.g. a symlink out of the checkout
			b.errs.add(ErrMissingFile, f, 0, "", "cannot read: %v", err)
			continue
		}
		data, err := readLimited(fh)
		fh.Close()
		if err != nil {
			b.errs.add(ErrTooLarge, f, 0, "", "%v", err)
			continue
		}
		parsed = append(parsed, parseDotenv(f, string(data), lookup, b.opts.RunCommand, b.errs))
	}
	reported := map[string]bool{}
	for _, use := range b.refs {
		var found *dotenvEntry
		var foundIn string
		for _, df := range parsed {
			if e, ok := df.entries[use.key]; ok {
				found, foundIn = e, df.name
			}
		}
		switch {
		case found == nil:
			b.errs.add(ErrSecret, use.file, use.line, use.path, "secret %s not found in %s", use.key, strings.Join(files, ", "))
		case found.problem != nil:
			if !reported[foundIn+use.key] {
				reported[foundIn+use.key] = true
				b.errs.add(found.kind, foundIn, found.line, use.key, "%s", found.problem.Error())
			}
			b.errs.add(ErrSecret, use.file, use.line, use.path, "secret %s is not available (see %s:%d)", use.key, foundIn, found.line)
		default:
			c.secrets[use.key] = found.value
		}
	}
	fill := func(r *Registry) {
		if r.Username.ref != "" {
			r.Username.v = c.secrets[r.Username.ref]
		}
		if r.Password.ref != "" {
			r.Password.v = c.secrets[r.Password.ref]
		}
	}
	fill(&c.Registry)
	c.fillSSHSecrets()
	for _, a := range c.Accessories {
		if a.Registry != nil {
			fill(a.Registry)
		}
	}
}

// ShortSecrets names the secrets whose value is shorter than
// redact.ShortSecretLen bytes, sorted: the redactor masks those only where
// they stand alone, not inside other text. Names are secret names from the
// secrets files, or "registry.password" (resp.
// "accessories.NAME.registry.password") for a literal password in
// deploy.yml. The values are not returned.
func (c *Config) ShortSecrets() []string {
	var out []string
	short := func(v string) bool { return v != "" && len(v) < redact.ShortSecretLen }
	for name, v := range c.secrets {
		if short(v) {
			out = append(out, name)
		}
	}
	if p := c.Registry.Password; p.ref == "" && short(p.v) {
		out = append(out, "registry.password")
	}
	for _, a := range c.Accessories {
		if a.Registry != nil && a.Registry.Password.ref == "" && short(a.Registry.Password.v) {
			out = append(out, "accessories."+a.Name+".registry.password")
		}
	}
	sort.Strings(out)
	return out
}

// SecretValues returns every distinct non-empty secret value the
// configuration uses (resolved secrets and a literal registry password),
// longest first, for the redactor. Callers must not log it.
func (c *Config) SecretValues() []string {
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	for _, v := range c.secrets {
		add(v)
	}
	add(c.Registry.Password.v)
	if c.Registry.Username.ref != "" {
		add(c.Registry.Username.v)
	}
	for _, a := range c.Accessories {
		if a.Registry != nil {
			add(a.Registry.Password.v)
			if a.Registry.Username.ref != "" {
				add(a.Registry.Username.v)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// secret returns the resolved value of secret key.
func (c *Config) secret(key string) string { return c.secrets[key] }

// closingParen returns the index of the ')' that closes the '(' at open,
// skipping backslash-escaped characters, or len(v) when there is none.
func closingParen(v string, open int) int {
	depth := 0
	for j := open; j < len(v); j++ {
		switch v[j] {
		case '\\':
			j++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return len(v)
}

// commandTexts returns the $(…) commands of v in order, as written.
func commandTexts(v string) []string {
	var out []string
	for i := 0; i+1 < len(v); i++ {
		if v[i] == '\\' {
			i++
			continue
		}
		if v[i] == '$' && v[i+1] == '(' {
			j := closingParen(v, i+1)
			if j >= len(v) {
				break
			}
			out = append(out, v[i+2:j])
			i = j
		}
	}
	return out
}

// redactErr describes a failed command without repeating the expanded
// command line (which may hold secret values).
func redactErr(err error, expanded string) string {
	return strings.ReplaceAll(err.Error(), expanded, "…")
}

// ParseEnvFile parses the operator's env file (given to capstan with
// --secrets-env-file): dotenv lines KEY=value with quotes, comments and
// "export", where $VAR refers to earlier keys of the same file only and
// $(command) is not allowed. Errors name the line, never a value.
func ParseEnvFile(name string, data []byte) (map[string]string, error) {
	errs := &collector{}
	if len(data) > MaxFileSize {
		errs.add(ErrTooLarge, name, 0, "", "file is larger than %d bytes", MaxFileSize)
		return nil, errs.result()
	}
	df := parseDotenv(name, string(data), func(string) (string, bool) { return "", false }, nil, errs)
	out := map[string]string{}
	for k, e := range df.entries {
		if e.problem != nil {
			errs.add(e.kind, name, e.line, k, "%s", e.problem.Error())
			continue
		}
		out[k] = e.value
	}
	if err := errs.result(); err != nil {
		return nil, err
	}
	return out, nil
}
