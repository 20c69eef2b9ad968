package kamal

import (
	"errors"
	"io"
	"io/fs"
	"sort"
	"strings"

	"github.com/capstan-dev/capstan/internal/redact"
)

var fsEOF = io.EOF // used by readLimited (load.go)

// ErrSecretsSkipped is returned by Plan for a configuration loaded with
// LoadOptions.SkipSecrets: its env files and credentials are unknown.
var ErrSecretsSkipped = errors.New("kamal: secrets were not read (SkipSecrets)")

// SecretsEnviron returns environ (KEY=value entries) as Kamal's own
// process has it while it reads the secrets files: KAMAL_DESTINATION set
// to destination, or removed when there is none. A LoadOptions.RunCommand
// gives it to the commands it runs.
func SecretsEnviron(environ []string, destination string) []string {
	out := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "KAMAL_DESTINATION=") {
			out = append(out, kv)
		}
	}
	if destination != "" {
		out = append(out, "KAMAL_DESTINATION="+destination)
	}
	return out
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

// secretsEnv is Ruby's ENV while Kamal reads the secrets files:
// KAMAL_DESTINATION (the destination, "" without one), then the operator's
// secrets env file, then capstan's environment. A variable set to "" is
// set.
func (b *builder) secretsEnv(name string) (string, bool) {
	if name == "KAMAL_DESTINATION" {
		return b.c.Destination, true
	}
	if v, ok := b.opts.SecretsEnv[name]; ok {
		return v, true
	}
	if b.opts.LookupEnv != nil {
		return b.opts.LookupEnv(name)
	}
	return "", false
}

// resolveSecrets reads the secrets files and resolves every reference. The
// files are parsed only when a secret is referenced, as Kamal reads them
// lazily; their $(command) substitutions run concurrently.
func (b *builder) resolveSecrets(fsys fs.FS) {
	c := b.c
	c.secrets = map[string]string{}
	c.secretsSkipped = b.opts.SkipSecrets
	if len(b.refs) == 0 || b.opts.SkipSecrets {
		return
	}
	files := c.secretFiles()
	var parsed []*dotenvFile
	unreadable := false // a file exists but could not be read: "not found" would mislead
	for _, name := range files {
		fh, err := fsys.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // missing files are fine until a secret is requested
		}
		if err != nil { // e.g. a symlink out of the checkout
			b.errs.add(ErrMissingFile, name, 0, "", "%s", readProblem(err))
			unreadable = true
			continue
		}
		data, err := readLimited(fh)
		fh.Close()
		if err != nil {
			b.errs.add(ErrTooLarge, name, 0, "", "%v", err)
			continue
		}
		f := newDotenvFile(name, string(data), b.errs)
		f.env, f.run = b.secretsEnv, b.opts.RunCommand
		f.unset = "in capstan's environment or the secrets env file (--secrets-env-file)"
		f.refused = "capstan does not run commands from the repository; put the value in capstan's environment or the --secrets-env-file and write $NAME, or start capstan with --allow-secret-commands"
		parsed = append(parsed, f)
	}
	evalDotenv(parsed)
	reported := map[string]bool{}
	for _, use := range b.refs {
		var found *dotenvEntry
		var foundIn string
		for _, f := range parsed {
			if e, ok := f.entries[use.key]; ok {
				found, foundIn = e, f.name
			}
		}
		switch {
		case found == nil && unreadable:
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

// ParseEnvFile parses the operator's env file (capstan's --secrets-env-file,
// the daemon's secrets_env_file) with the same dotenv rules as the secrets
// files, except that $VAR refers to earlier keys of the same file only and
// $(command) is not allowed. Errors name the file, line and key, never a
// value.
func ParseEnvFile(name string, data []byte) (map[string]string, error) {
	errs := &collector{}
	if len(data) > MaxFileSize {
		errs.add(ErrTooLarge, name, 0, "", "file is larger than %d bytes", MaxFileSize)
		return nil, errs.result()
	}
	f := newDotenvFile(name, string(data), errs)
	f.unset = "earlier in this file (an env file refers only to its own keys)"
	f.refused = "an env file cannot run commands"
	evalDotenv([]*dotenvFile{f})
	out := map[string]string{}
	for k, e := range f.entries {
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

// BlankSecrets names the referenced secrets whose value is empty or only
// white space, sorted (Kamal warns "Kamal secret X is blank" for them; a
// bare KEY line in a secrets file gives one). The values are not returned.
func (c *Config) BlankSecrets() []string {
	var out []string
	for name, v := range c.secrets {
		if blank(v) {
			out = append(out, name)
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
