package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/internal/registry"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
	"github.com/capstan-dev/capstan/reconcile/proxy/haproxy"
	"github.com/capstan-dev/capstan/reconcile/proxy/kamalproxy"
)

func init() {
	register(command{name: "plan", summary: "show what apply would change on each host, and the drift (changes nothing)", run: runPlan})
	register(command{name: "apply", summary: "converge every host to the configuration, as kamal deploy would", run: runApply})
}

// deployFlags are the flags plan and apply share, beyond validate's.
type deployFlags struct {
	*configFlags
	stateDir    string
	json        bool
	lockTimeout time.Duration
	noRollback  bool
	insecure    stringList
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func (f *deployFlags) register(fs *flag.FlagSet, e *env, apply bool) {
	f.configFlags = addConfigFlags(fs, e)
	fs.StringVar(&f.stateDir, "state-dir", defaultStateDir(e), "capstan's state directory; holds the fingerprint key the daemon shares (env CAPSTAN_STATE_DIR)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
	if apply {
		fs.DurationVar(&f.lockTimeout, "lock-timeout", reconcile.DefaultLockTimeout, "how long to wait for a deploy lock held by someone else")
		fs.BoolVar(&f.noRollback, "no-rollback", false, "keep hosts that already switched when a later host fails (Kamal's behaviour)")
		fs.Var(&f.insecure, "insecure-registry", "registry host:port spoken to over plain HTTP when resolving the image digest (repeatable; env CAPSTAN_INSECURE_REGISTRIES, comma-separated)")
		if v := e.getenv("CAPSTAN_INSECURE_REGISTRIES"); v != "" {
			f.insecure = strings.Split(v, ",")
		}
	}
}

const stateKeyFile = "fingerprint.key"

func defaultStateDir(e *env) string {
	if d := e.getenv("CAPSTAN_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/capstan"
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".local", "state", "capstan")
	}
	return ".capstan"
}

// stateKey returns the HMAC key of spec fingerprints, created once (32
// random bytes, 0600) in the state directory. The CLI and the daemon share
// it, so both compute the same fingerprints. CAPSTAN_FINGERPRINT_KEY wins.
func stateKey(e *env, stateDir string) ([]byte, error) {
	if k := e.getenv("CAPSTAN_FINGERPRINT_KEY"); k != "" {
		return []byte(k), nil
	}
	p := filepath.Join(stateDir, stateKeyFile)
	if b, err := os.ReadFile(p); err == nil && len(b) >= 32 {
		return b, nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, key, 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, p); err != nil {
		return nil, err
	}
	return key, nil
}

// loadDeploy loads deploy.yml for plan and apply.
func loadDeploy(ctx context.Context, e *env, f *deployFlags) (*kamal.Config, error) {
	key, err := stateKey(e, f.stateDir)
	if err != nil {
		return nil, err
	}
	return f.load(ctx, e, key)
}

// newPool builds the SSH pool from the global flags, the environment and
// deploy.yml's ssh block; every secret of the config is redacted, and each
// too short to be masked inside free text is warned about.
// poolOptions are the daemon's SSH settings beyond the global flags (zero:
// hostexec's defaults).
type poolOptions struct {
	AcceptNew                      bool
	ConnectTimeout, CommandTimeout time.Duration
	// NoRepoKeyFiles ignores deploy.yml's ssh.keys and ssh.config (files on
	// the deploying machine): the daemon does not let a repository pick
	// which of its files to use as a key (another app's, say); it uses its
	// own identity and the app's key_data secrets.
	NoRepoKeyFiles bool
	// Dials, when set, bounds the pool's dials together with other pools'.
	Dials *hostexec.DialLimit
}

func newPool(e *env, cfg *kamal.Config, o poolOptions) (*hostexec.Pool, *redact.Redactor, error) {
	red := redact.New(cfg.SecretValues()...)
	for _, name := range cfg.ShortSecrets() {
		if e.log == nil {
			break
		}
		e.log.Warn(shortSecretWarning(name), "secret", name)
	}
	pc := hostexec.Config{Logger: e.log, Redactor: red, AcceptNew: o.AcceptNew, ConnectTimeout: o.ConnectTimeout, CommandTimeout: o.CommandTimeout, Dials: o.Dials}
	pc.FromEnv(e.getenv)
	if e.knownHosts != "" {
		pc.KnownHosts = []string{e.knownHosts}
	}
	if e.identity != "" {
		pc.Keys = []string{e.identity}
	}
	s := cfg.SSH
	pc.User, pc.Port, pc.Proxy, pc.KeysOnly = s.User, s.Port, s.Proxy, s.KeysOnly
	for _, k := range s.KeyData {
		pc.KeyData = append(pc.KeyData, k.Reveal())
	}
	switch {
	case o.NoRepoKeyFiles && (len(s.Keys) > 0 || s.Config):
		if e.log != nil {
			e.log.Warn("deploy.yml's ssh.keys and ssh.config name files on the deploying machine; the daemon ignores them and uses its own identity and ssh.key_data", "service", cfg.Service)
		}
	case !o.NoRepoKeyFiles:
		pc.Keys = append(pc.Keys, s.Keys...)
		if s.Config {
			pc.SSHConfig = append([]string{"~/.ssh/config"}, s.ConfigFiles...)
		}
	}
	pool, err := hostexec.New(pc)
	return pool, red, err
}

// poolKey identifies what a pool built by newPool depends on in cfg: the
// ssh block and the secrets its redactor knows. A new revision that changes
// either needs a new pool.
func poolKey(cfg *kamal.Config) string {
	h := sha256.New()
	s := cfg.SSH
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%v\x00%q\x00%v\x00%q\x00", s.User, s.Port, s.Proxy, s.KeysOnly, s.Keys, s.Config, s.ConfigFiles)
	for _, k := range s.KeyData {
		fmt.Fprintf(h, "%q\x00", k.Reveal())
	}
	fmt.Fprintf(h, "%q", cfg.SecretValues())
	return hex.EncodeToString(h.Sum(nil))
}

// newApp wires the desired state, SSH (pool, whose redactor red also masks
// what the App keeps) and the proxy driver.
func newApp(e *env, cfg *kamal.Config, pool *hostexec.Pool, red *redact.Redactor) (*reconcile.App, error) {
	plans, err := cfg.Plans()
	if err != nil {
		return nil, err
	}
	hosts := sshHosts{pool: pool}
	a := &reconcile.App{Config: cfg, Hosts: plans, SSH: hosts, Log: e.log, Performer: performer(), Redact: red.String,
		RebootAccessories: cfg.Capstan.RebootAccessories, StopUnmanaged: cfg.Capstan.StopUnmanaged}
	var drv proxy.Driver
	switch cfg.Capstan.Proxy {
	case "haproxy":
		h := cfg.Capstan.HAProxy
		drv, err = haproxy.New(hosts, hosts, haproxy.Settings{Image: h.Image, ConfigDir: h.ConfigDir, SocketDir: h.SocketDir, HTTPPort: h.HTTPPort, Logger: e.log})
		a.ProxyContainer = haproxy.DefaultContainer
	default:
		// kamal-proxy's CLI runs in its container: through the Docker API
		// when the host allows, as docker exec would.
		drv, err = kamalproxy.New(a.ExecRunner(hosts), kamalProxySettings(cfg))
		a.ProxyContainer = kamalproxy.DefaultContainer
	}
	if err != nil {
		return nil, err
	}
	a.Proxy = drv
	return a, nil
}

// kamalProxySettings maps proxy.run to the kamal-proxy driver.
func kamalProxySettings(cfg *kamal.Config) kamalproxy.Settings {
	var s kamalproxy.Settings
	for _, r := range cfg.Roles {
		if r.Proxy == nil || r.Proxy.Run == nil {
			continue
		}
		run := r.Proxy.Run
		s.Registry, s.Repository, s.Version = run.Registry, run.Repository, run.Version
		s.HTTPPort, s.HTTPSPort, s.MetricsPort, s.Debug, s.LogMaxSize = run.HTTPPort, run.HTTPSPort, run.MetricsPort, run.Debug, run.LogMaxSize
		s.NoPublish = !run.Publish
		for _, ip := range run.BindIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.BindIPs = append(s.BindIPs, a)
			}
		}
		for _, o := range run.Options {
			for _, v := range o.Values {
				s.Options = append(s.Options, kamalproxy.Option{Key: o.Key, Value: v})
			}
			if o.Flag {
				s.Options = append(s.Options, kamalproxy.Option{Key: o.Key})
			}
		}
		break
	}
	return s
}

func performer() string {
	h, _ := os.Hostname()
	if h == "" {
		return "capstan"
	}
	return "capstan@" + h
}

// openApp parses plan's or apply's flags, loads deploy.yml and wires an
// App. help is true when -h was asked; close releases the SSH pool.
func openApp(ctx context.Context, e *env, name string, args []string, f *deployFlags) (app *reconcile.App, close func(), help bool, err error) {
	fs := newFlagSet(e, name, "[-c FILE] [-d DEST] [--version V] [--json]")
	f.register(fs, e, name == "apply")
	if help, err := parseFlags(fs, args); help || err != nil {
		return nil, nil, help, err
	}
	app, close, err = loadApp(ctx, e, f)
	return app, close, false, err
}

// loadApp loads deploy.yml as f's parsed flags say and wires an App on a
// new SSH pool; close releases the pool.
func loadApp(ctx context.Context, e *env, f *deployFlags) (app *reconcile.App, close func(), err error) {
	cfg, err := loadDeploy(ctx, e, f)
	if err != nil {
		return nil, nil, err
	}
	app, pool, err := connectApp(e, cfg)
	if err != nil {
		return nil, nil, err
	}
	return app, func() { pool.Close() }, nil
}

// connectApp builds the SSH pool and the App of cfg for a CLI command;
// the caller closes the pool.
func connectApp(e *env, cfg *kamal.Config) (*reconcile.App, *hostexec.Pool, error) {
	pool, red, err := newPool(e, cfg, poolOptions{})
	if err != nil {
		return nil, nil, err
	}
	app, err := newApp(e, cfg, pool, red)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return app, pool, nil
}

func runPlan(ctx context.Context, e *env, args []string) error {
	var f deployFlags
	app, closePool, help, err := openApp(ctx, e, "plan", args, &f)
	if help || err != nil {
		return err
	}
	defer closePool()
	p, err := app.Plan(ctx)
	if err != nil {
		return err
	}
	if f.json {
		return p.WriteJSON(e.stdout)
	}
	p.WriteText(e.stdout)
	if len(p.Unreachable()) > 0 {
		return errSilent
	}
	return nil
}

func runApply(ctx context.Context, e *env, args []string) error {
	var f deployFlags
	app, closePool, help, err := openApp(ctx, e, "apply", args, &f)
	if help || err != nil {
		return err
	}
	defer closePool()
	cfg := app.Config
	app.LockTimeout, app.NoRollback = f.lockTimeout, f.noRollback || cfg.Capstan.NoRollback
	start := time.Now()
	// The registry's digest lets hosts that have it skip the pull, and a
	// tag that is not there fails before any host is touched.
	reg := cfg.Registry
	rc := &registry.Client{Username: reg.Username.Reveal(), Password: reg.Password.Reveal(), Insecure: f.insecure}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	digest, err := rc.Resolve(rctx, cfg.Image())
	cancel()
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("image %s is not in its registry; nothing was changed", cfg.Image())
	case err != nil:
		e.log.Warn("cannot resolve the image digest; hosts that have the tag will not re-pull it", "image", cfg.Image(), "err", err)
	default:
		app.ImageDigest = digest
	}
	p, err := app.Plan(ctx)
	if err != nil {
		return err
	}
	if !f.json {
		p.WriteText(e.stdout)
	}
	res, applyErr := app.Apply(ctx, p)
	if f.json {
		if err := writeJSON(e.stdout, res); err != nil {
			return err
		}
	} else {
		writeResult(e, res, time.Since(start))
	}
	if applyErr != nil {
		return fmt.Errorf("apply failed: %w", applyErr)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeResult prints what apply did, host by host, with step timings.
func writeResult(e *env, res *reconcile.Result, took time.Duration) {
	w := e.stdout
	for _, h := range res.Hosts {
		if len(h.Steps) == 0 && h.Error == "" {
			continue
		}
		fmt.Fprintf(w, "%s:\n", h.Host)
		for _, s := range h.Steps {
			status := "ok"
			if s.Error != "" {
				status = "FAILED: " + s.Error
			}
			fmt.Fprintf(w, "  %-60s %6s  %s\n", s.Step.String(), s.End.Sub(s.Start).Round(time.Millisecond), status)
			if s.Logs != "" {
				what := "last log lines of the new container"
				if s.Kind == reconcile.StepJob {
					what = "output of the job"
				}
				fmt.Fprintf(w, "    %s:\n", what)
				for _, l := range strings.Split(strings.TrimRight(s.Logs, "\n"), "\n") {
					fmt.Fprintf(w, "      %s\n", l)
				}
			}
		}
		if h.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", h.Error)
		}
	}
	if len(res.RolledBack) > 0 {
		fmt.Fprintf(w, "switched back to the previous version on: %s\n", strings.Join(res.RolledBack, ", "))
	}
	verdict := "applied"
	if res.Failed() {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "%s %s in %s\n", verdict, res.Version, took.Round(time.Millisecond))
}
