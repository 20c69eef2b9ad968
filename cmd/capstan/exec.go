package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

func init() {
	register(command{name: "exec", summary: "run a command in a new container of the running version, or in the running one (kamal app exec)", run: runExec})
}

const execUsage = "[-c FILE] [-d DEST] [-r ROLE] [--primary | --hosts H,…] [--reuse] [-i] [-e K=V]… [--detach] -- CMD…"

// execFlags are capstan exec's flags beyond the configuration's.
type execFlags struct {
	*configFlags
	sel                        execSelection
	reuse, detach, interactive bool
	env                        stringList
}

func (f *execFlags) register(fs *flag.FlagSet, e *env) {
	f.configFlags = addConfigFlags(fs, e)
	fs.Lookup("version").Usage = "run a new container of version `V` (or with --reuse, exec into its container) instead of the version each host runs"
	for _, n := range []string{"r", "roles"} {
		fs.Func(n, "`ROLES` to run on (comma-separated, * wildcards; default: every role)", func(v string) error {
			f.sel.roles = append(f.sel.roles, reconcile.SplitList(v)...)
			return nil
		})
	}
	fs.Func("hosts", "`HOSTS` to run on (comma-separated, * wildcards; default: every host of the roles)", func(v string) error {
		f.sel.hosts = append(f.sel.hosts, reconcile.SplitList(v)...)
		return nil
	})
	for _, n := range []string{"p", "primary"} {
		fs.BoolVar(&f.sel.primary, n, false, "run on the primary host only (the first host of the first selected role)")
	}
	fs.BoolVar(&f.reuse, "reuse", false, "run in the role's running container (docker exec) instead of a new one")
	for _, n := range []string{"i", "interactive"} {
		fs.BoolVar(&f.interactive, n, false, "interactive: a terminal over SSH, on one host (the primary one unless --hosts names one)")
	}
	for _, n := range []string{"e", "env"} {
		fs.Var(&f.env, n, "set `K=V` in the command's environment (repeatable; goes on the remote command line: not for secrets)")
	}
	fs.BoolVar(&f.detach, "detach", false, "start the new container detached (prints its ID; not removed when it exits)")
}

// parseEnv turns -e K=V values into the request's env.
func parseEnv(list []string) ([]kamal.KV, error) {
	var out []kamal.KV
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError("-e %q: want K=V", kv)
		}
		out = append(out, kamal.KV{Key: k, Value: v})
	}
	return out, nil
}

// execSelection says where exec runs: role and host patterns (path.Match
// wildcards; none means all), --primary, and whether the command is
// interactive (one host, one role).
type execSelection struct {
	roles, hosts []string
	primary      bool
	interactive  bool
}

// execTarget is one role on one host.
type execTarget struct{ host, role string }

// selectTargets returns the (host, role) pairs exec runs on, hosts in the
// configuration's order (primary role's first), each host's roles primary
// first, as Kamal's `app exec` goes through hosts and their roles. An
// interactive command runs on one of them: on the primary host unless
// --hosts names one, as its first selected role. A pattern that matches
// nothing is a usage error.
func selectTargets(cfg *kamal.Config, sel execSelection) ([]execTarget, error) {
	var roles []*kamal.Role
	for _, r := range cfg.Roles {
		if len(r.Hosts) == 0 {
			continue
		}
		ok, err := matchAny(sel.roles, r.Name)
		if err != nil {
			return nil, err
		}
		if ok {
			roles = append(roles, r)
		}
	}
	if len(roles) == 0 {
		return nil, usageError("no role with hosts matches -r %s", strings.Join(sel.roles, ","))
	}
	primary := sel.primary || sel.interactive && len(sel.hosts) == 0
	var targets []execTarget
	hosts := map[string]bool{}
	for _, h := range cfg.AppHosts() {
		if primary && h != roles[0].Hosts[0] {
			continue
		}
		ok, err := matchAny(sel.hosts, h)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for _, r := range roles {
			if contains(r.Hosts, h) {
				targets = append(targets, execTarget{host: h, role: r.Name})
				hosts[h] = true
			}
		}
	}
	switch {
	case len(targets) == 0:
		return nil, usageError("no host of the selected roles matches --hosts %s", strings.Join(sel.hosts, ","))
	case sel.interactive && len(hosts) > 1:
		return nil, usageError("-i runs on one host; --hosts %s matches %d", strings.Join(sel.hosts, ","), len(hosts))
	case sel.interactive:
		return targets[:1], nil
	}
	return targets, nil
}

// matchAny reports whether s matches one of patterns (all when none).
func matchAny(patterns []string, s string) (bool, error) {
	if len(patterns) == 0 {
		return true, nil
	}
	for _, p := range patterns {
		ok, err := path.Match(p, s)
		if err != nil {
			return false, usageError("bad pattern %q: %v", p, err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runExec is `capstan exec`: Kamal's `kamal app exec`. The command's
// output goes to the operator as it is, secrets included (they asked for
// it); capstan's own logs never carry it, nor the env file's values,
// which reach the host over stdin. The exit status is the command's, the
// highest across hosts; a host where it could not run counts as 1.
func runExec(ctx context.Context, e *env, args []string) error {
	var f execFlags
	fs := newFlagSet(e, "exec", execUsage)
	f.register(fs, e)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	cmd := fs.Args()
	switch {
	case len(cmd) == 0:
		return usageError("exec: no command given (capstan exec [flags] -- CMD…)")
	case f.detach && (f.interactive || f.reuse):
		return usageError("exec: --detach is not compatible with -i or --reuse")
	case f.sel.primary && len(f.sel.hosts) > 0:
		return usageError("exec: --primary and --hosts exclude each other")
	}
	envKV, err := parseEnv(f.env)
	if err != nil {
		return err
	}
	f.sel.interactive = f.interactive
	key, _, err := fingerprintKey(e)
	if err != nil {
		return err
	}
	cfg, err := f.load(ctx, e, key)
	if err != nil {
		return err
	}
	targets, err := selectTargets(cfg, f.sel)
	if err != nil {
		return err
	}
	app, pool, err := connectApp(e, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	req := reconcile.ExecRequest{Cmd: cmd, Env: envKV, Reuse: f.reuse, Interactive: f.interactive, Detach: f.detach, ConfigVersion: f.version != ""}
	if f.interactive {
		t := targets[0]
		req.Host, req.Role = t.host, t.role
		return execInteractive(ctx, e, app, pool, req)
	}
	return execAll(ctx, e, app, pool, targets, req)
}

// execAll runs req on every target at once, each output line prefixed
// with its host (and role, when a host runs several) when there are
// several targets.
func execAll(ctx context.Context, e *env, app *reconcile.App, pool *hostexec.Pool, targets []execTarget, req reconcile.ExecRequest) error {
	labels := targetLabels(targets)
	var mu sync.Mutex
	codes := make([]int, len(targets))
	sem := make(chan struct{}, reconcile.DefaultParallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		stdout, stderr := e.stdout, e.stderr
		var flush func()
		if labels != nil {
			o, s := newLinePrefixer(&mu, e.stdout, labels[i]), newLinePrefixer(&mu, e.stderr, labels[i])
			stdout, stderr, flush = o, s, func() { o.Flush(); s.Flush() }
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := req
			r.Host, r.Role = t.host, t.role
			err := execOne(ctx, e, app, pool, r, stdout, stderr)
			if flush != nil {
				flush()
			}
			codes[i] = exitStatus(err)
			if err != nil && ctx.Err() == nil && (!isExit(err) || labels != nil) {
				mu.Lock()
				fmt.Fprintf(e.stderr, "capstan: %s\n", describe(t, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if worst := worstExit(codes); worst != 0 {
		return &exitStatusError{code: worst}
	}
	return nil
}

// execOne prepares and runs one non-interactive exec.
func execOne(ctx context.Context, e *env, app *reconcile.App, pool *hostexec.Pool, req reconcile.ExecRequest, stdout, stderr io.Writer) error {
	cmd, err := app.PrepareExec(ctx, req)
	if err != nil {
		return err
	}
	e.log.Info("exec", "host", req.Host, "role", req.Role, "version", cmd.Version, "container", cmd.Container)
	return pool.Stream(ctx, sshHosts{pool: pool}.target(req.Host), cmd.Argv, stdout, stderr, hostexec.RunOptions{})
}

// execInteractive runs req on a terminal: the local one in raw mode when
// stdin is a terminal.
func execInteractive(ctx context.Context, e *env, app *reconcile.App, pool *hostexec.Pool, req reconcile.ExecRequest) error {
	cmd, err := app.PrepareExec(ctx, req)
	if err != nil {
		return err
	}
	e.log.Info("exec", "host", req.Host, "role", req.Role, "version", cmd.Version, "container", cmd.Container, "interactive", true)
	t, restore, err := openTerminal(e)
	if err != nil {
		return err
	}
	err = pool.Interactive(ctx, sshHosts{pool: pool}.target(req.Host), cmd.Argv, t)
	restore()
	if isExit(err) {
		return &exitStatusError{code: exitStatus(err)}
	}
	return err
}

// targetLabels are the output prefixes of targets: nil for one target,
// else the host, with the role when a host has several targets.
func targetLabels(targets []execTarget) []string {
	if len(targets) < 2 {
		return nil
	}
	perHost := map[string]int{}
	for _, t := range targets {
		perHost[t.host]++
	}
	labels := make([]string, len(targets))
	for i, t := range targets {
		labels[i] = t.host
		if perHost[t.host] > 1 {
			labels[i] += " " + t.role
		}
	}
	return labels
}

// isExit reports whether err is the remote command's non-zero exit.
func isExit(err error) bool {
	var ee *hostexec.ExitError
	return errors.As(err, &ee)
}

// exitStatus is the exit status err stands for: 0 for nil, the remote
// command's for its exit, 1 (exitFailure) when it could not run.
func exitStatus(err error) int {
	var ee *hostexec.ExitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee) && ee.Code > 0:
		return ee.Code
	default:
		return exitFailure
	}
}

// worstExit is the highest status of codes (0 when all are 0).
func worstExit(codes []int) int {
	worst := 0
	for _, c := range codes {
		worst = max(worst, c)
	}
	return worst
}

// describe says what happened to target t: the remote command's exit
// status, or why it could not run.
func describe(t execTarget, err error) string {
	var ee *hostexec.ExitError
	if errors.As(err, &ee) {
		if ee.Signal != "" {
			return fmt.Sprintf("%s (%s): killed by signal %s", t.host, t.role, ee.Signal)
		}
		return fmt.Sprintf("%s (%s): exit status %d", t.host, t.role, ee.Code)
	}
	return fmt.Sprintf("%s (%s): %v", t.host, t.role, err)
}
