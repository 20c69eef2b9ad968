package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

func init() {
	register(command{name: "config", summary: "print the merged Kamal configuration as YAML, secrets redacted", run: runConfig})
}

// secretCommandTimeout bounds all the $(command)s of the secrets files of
// one load together, when the operator allowed command substitution
// (independent commands run concurrently).
const secretCommandTimeout = 60 * time.Second

// configFlags are the flags shared by validate, render and config. They
// follow Kamal's names where Kamal has them.
type configFlags struct {
	configFile     string
	destination    string
	version        string
	secretsEnvFile string
	allowCommands  bool
	// noSecrets checks the configuration without reading the secrets
	// files (validate --no-secrets).
	noSecrets bool
}

func addConfigFlags(fs *flag.FlagSet, e *env) *configFlags {
	f := &configFlags{}
	for _, n := range []string{"c", "config-file"} {
		fs.StringVar(&f.configFile, n, kamal.DefaultConfigFile, "Kamal configuration file, relative to the repository root (the current directory)")
	}
	for _, n := range []string{"d", "destination"} {
		fs.StringVar(&f.destination, n, "", "Kamal destination: merges config/deploy.DEST.yml and reads .kamal/secrets.DEST")
	}
	fs.StringVar(&f.version, "version", "", "version to run (image tag or sha256:… digest); default: x-capstan.version, else the git commit")
	fs.StringVar(&f.secretsEnvFile, "secrets-env-file", e.getenv("CAPSTAN_SECRETS_ENV_FILE"), "env file with the variables .kamal/secrets refers to as $VAR (env CAPSTAN_SECRETS_ENV_FILE)")
	fs.BoolVar(&f.allowCommands, "allow-secret-commands", false, "run $(command) substitutions found in .kamal/secrets (off: they are refused)")
	return f
}

// load reads the configuration from the current directory. A configuration
// error is printed to e.stderr and errSilent returned.
func (f *configFlags) load(ctx context.Context, e *env, key []byte) (*kamal.Config, error) {
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	cfgPath, err := repoPath(root, f.configFile)
	if err != nil {
		return nil, usageError("%v", err)
	}
	opts := kamal.LoadOptions{
		ConfigFile:     cfgPath,
		Destination:    f.destination,
		Version:        f.version,
		FingerprintKey: key,
		LookupEnv:      e.lookup,
		SkipSecrets:    f.noSecrets,
	}
	if f.secretsEnvFile != "" && !f.noSecrets {
		data, err := os.ReadFile(f.secretsEnvFile)
		if err != nil {
			return nil, fmt.Errorf("secrets env file: %w", err)
		}
		vars, err := kamal.ParseEnvFile(f.secretsEnvFile, data)
		if err != nil {
			printErrors(e, err)
			return nil, errSilent
		}
		opts.SecretsEnv = vars
	}
	if f.allowCommands && !f.noSecrets {
		cmdCtx, cancel := context.WithTimeout(ctx, secretCommandTimeout)
		defer cancel()
		environ := kamal.SecretsEnviron(os.Environ(), f.destination)
		opts.RunCommand = func(cmd string) (string, error) { return runSecretCommand(cmdCtx, root, cmd, environ) }
	}
	// The revision is the default version, and what ERB's git commands and
	// Time.now answer (also with --version).
	switch rev, err := gitRevision(root); {
	case err == nil:
		opts.Revision = rev
		opts.RevisionTime = commitTime(root, rev)
	case f.version == "" && !errors.Is(err, errNotGit):
		return nil, err
	}
	c, err := kamal.LoadDir(root, opts)
	if err != nil {
		printErrors(e, err)
		return nil, errSilent
	}
	return c, nil
}

// printErrors writes one configuration error per line.
func printErrors(e *env, err error) {
	var es kamal.Errors
	if errors.As(err, &es) {
		for _, line := range es.Lines() {
			fmt.Fprintln(e.stderr, line)
		}
		fmt.Fprintf(e.stderr, "capstan: %d error(s) in the configuration\n", len(es))
		return
	}
	fmt.Fprintf(e.stderr, "capstan: %v\n", err)
}

// repoPath turns a -c value into a slash path inside root.
func repoPath(root, p string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("config file %s is outside the current directory (run capstan from the repository root)", p)
	}
	return filepath.ToSlash(rel), nil
}

// runSecretCommand runs one $(command) of a secrets file with sh, in the
// repository root, with environ (nil: capstan's), until ctx ends (the
// deadline shared by all the commands of a load). Its stderr is dropped
// (it may echo secrets); the error says only how it failed. It is safe for
// concurrent use.
func runSecretCommand(ctx context.Context, dir, cmd string, environ []string) (string, error) {
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Dir = dir
	c.Env = environ
	var out bytes.Buffer
	c.Stdout = &out
	c.Stderr = io.Discard
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("not finished when the %v allowed for all the secrets commands ran out", secretCommandTimeout)
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("exit status %d", ee.ExitCode())
		}
		return "", errors.New("could not start sh")
	}
	return out.String(), nil
}

var errNotGit = errors.New("not a git repository")

var reSHA = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// gitRevision returns the commit SHA of HEAD for the repository containing
// dir, reading .git directly (worktrees and packed refs included).
func gitRevision(dir string) (string, error) {
	gitDir := ""
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, ".git")
		if st, err := os.Stat(p); err == nil {
			if st.IsDir() {
				gitDir = p
			} else {
				data, err := os.ReadFile(p)
				if err != nil {
					return "", err
				}
				s := strings.TrimSpace(string(data))
				if !strings.HasPrefix(s, "gitdir:") {
					return "", fmt.Errorf("%s: unrecognised .git file", p)
				}
				gitDir = strings.TrimSpace(strings.TrimPrefix(s, "gitdir:"))
				if !filepath.IsAbs(gitDir) {
					gitDir = filepath.Join(d, gitDir)
				}
			}
			break
		}
		if filepath.Dir(d) == d {
			return "", errNotGit
		}
	}
	commonDir := gitDir
	if data, err := os.ReadFile(filepath.Join(gitDir, "commondir")); err == nil {
		commonDir = strings.TrimSpace(string(data))
		if !filepath.IsAbs(commonDir) {
			commonDir = filepath.Join(gitDir, commonDir)
		}
	}
	head, err := os.ReadFile(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return "", fmt.Errorf("read git HEAD: %w", err)
	}
	ref := strings.TrimSpace(string(head))
	for i := 0; i < 10; i++ {
		if reSHA.MatchString(ref) {
			return ref, nil
		}
		name, ok := strings.CutPrefix(ref, "ref: ")
		if !ok {
			return "", fmt.Errorf("git HEAD: unrecognised content")
		}
		name = strings.TrimSpace(name)
		var data []byte
		for _, d := range []string{gitDir, commonDir} {
			if data, err = os.ReadFile(filepath.Join(d, filepath.FromSlash(name))); err == nil {
				break
			}
		}
		if err == nil {
			ref = strings.TrimSpace(string(data))
			continue
		}
		packed, perr := os.ReadFile(filepath.Join(commonDir, "packed-refs"))
		if perr != nil {
			return "", fmt.Errorf("git ref %s not found (empty repository?)", name)
		}
		found := false
		for _, line := range strings.Split(string(packed), "\n") {
			if sha, n, ok := strings.Cut(strings.TrimSpace(line), " "); ok && n == name {
				ref, found = sha, true
				break
			}
		}
		if !found {
			return "", fmt.Errorf("git ref %s not found (empty repository?)", name)
		}
	}
	return "", fmt.Errorf("git HEAD: too many symbolic refs")
}

// commitTime returns the author time of commit sha in the repository
// containing dir (what the daemon knows as the revision's time), or the
// zero time when it cannot be read: ERB's Time.now is then refused.
func commitTime(dir, sha string) time.Time {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if err != nil {
		return time.Time{}
	}
	c, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return time.Time{}
	}
	return c.Author.When
}

// fingerprintKey returns the key for spec fingerprints:
// CAPSTAN_FINGERPRINT_KEY if set, else the key kept in the state directory
// (the one plan, apply and serve use) if it exists, else a random key for
// this run only (ephemeral reports whether it was random).
func fingerprintKey(e *env) (key []byte, ephemeral bool, err error) {
	if k := e.getenv("CAPSTAN_FINGERPRINT_KEY"); k != "" {
		return []byte(k), false, nil
	}
	if b, err := os.ReadFile(filepath.Join(defaultStateDir(e), stateKeyFile)); err == nil && len(b) >= 32 {
		return b, false, nil
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// shortSecretWarning is the warning, shown by validate and logged when the
// SSH pool is built, for a secret too short to be masked inside free text
// (see package redact). It names the secret, never its value.
func shortSecretWarning(name string) string {
	return fmt.Sprintf("secret %s is shorter than %d characters: it is masked in logs and output only where it stands as a whole value (PASSWORD=…, an argument, a quoted or space-delimited word), not inside other text; use a longer value", name, redact.ShortSecretLen)
}

// redacting returns writers that mask c's secret values, and a flush.
func redacting(e *env, c *kamal.Config) (stdout, stderr io.Writer, flush func()) {
	r := redact.New(c.SecretValues()...)
	o, s := r.NewWriter(e.stdout), r.NewWriter(e.stderr)
	return o, s, func() { _ = o.Flush(); _ = s.Flush() }
}

func runConfig(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "config", "[-c FILE] [-d DEST]")
	f := addConfigFlags(fs, e)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("config takes no arguments")
	}
	c, err := f.load(ctx, e, nil)
	if err != nil {
		return err
	}
	out, _, flush := redacting(e, c)
	defer flush()
	return c.WriteYAML(out)
}
