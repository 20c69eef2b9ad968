package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// ErrNotRunning: the role has no running container on the host, so there
// is neither a running version to start a one-off container of nor a
// container to exec into.
var ErrNotRunning = errors.New("no running container")

// ExecRequest is `capstan exec` on one host for one role (Kamal's
// `kamal app exec`).
type ExecRequest struct {
	Host, Role string
	// Cmd is the command, as argv.
	Cmd []string
	// Env are extra variables (-e K=V). They go on the remote command
	// line: a value holding a secret of the configuration is refused by
	// the SSH layer.
	Env []kamal.KV
	// Reuse runs Cmd in the role's running container (docker exec)
	// instead of a new one.
	Reuse bool
	// Interactive adds -it (the caller runs the command on a terminal).
	Interactive bool
	// Detach starts the new container with --detach instead of --rm.
	Detach bool
	// ConfigVersion runs the configuration's version (capstan exec
	// --version V) instead of the running one: a new container of its
	// image, or with Reuse its container S-R[-D]-V.
	ConfigVersion bool
}

// ExecCommand is a prepared ExecRequest: what to run on the host.
type ExecCommand struct {
	Host, Role string
	// Version is the running version (the name in the current
	// container's name), whose image a new container runs.
	Version string
	// Container is the container Cmd runs in: the current one with
	// Reuse, else the new one's name.
	Container string
	// Argv is the docker command to run on the host.
	Argv []string
}

// PrepareExec observes req.Host and finds the role's current container
// (the one a plan sees as current, see roleContainers). With Reuse the command is `docker exec
// [-it] [--env K=V]… CONTAINER CMD…`. Otherwise it is Kamal's exec
// container (kamal.Config.ExecRun) of the *running* version: the image of
// the current container, not the configuration's version (unless
// ConfigVersion); the role's env file, which the boot wrote, is written
// first (as the boot writes it, from the configuration) when it is
// missing. Kamal's "Executed cmd" line goes to the host's audit log.
//
// Errors: ErrNotRunning when no container of the role runs on the host
// (and ConfigVersion is false),
// ErrUnreachable when it cannot be observed, ErrHost when the env file
// cannot be written.
func (a *App) PrepareExec(ctx context.Context, req ExecRequest) (*ExecCommand, error) {
	cfg := a.Config
	if cfg.Role(req.Role) == nil {
		return nil, fmt.Errorf("exec: no role %q", req.Role)
	}
	octx, cancel := context.WithTimeout(ctx, a.observeTimeout())
	o, err := a.observe(octx, req.Host)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, req.Host, err)
	}
	r, spec := cfg.Role(req.Role), a.roleSpec(req.Host, req.Role)
	if spec == nil {
		return nil, fmt.Errorf("exec: role %s does not run on %s", req.Role, req.Host)
	}
	run := *cfg // the configuration at the version to run
	out := &ExecCommand{Host: req.Host, Role: req.Role, Version: cfg.Version.Name(), Container: cfg.ContainerName(r)}
	if !req.ConfigVersion {
		cur, _ := a.roleContainers(spec, o)
		if cur == nil {
			return nil, fmt.Errorf("%w: %s: role %s", ErrNotRunning, req.Host, req.Role)
		}
		out.Version, out.Container = strings.TrimPrefix(cur.Name, cfg.Prefix(r)+"-"), cur.Name
		run.Version = runningVersion(cfg, cur, out.Version)
	}
	a.auditExec(ctx, req, out.Version)
	if req.Reuse {
		out.Argv = execArgv(out.Container, req)
		return out, nil
	}
	name, cmd, err := run.ExecRun(kamal.ExecOptions{Role: req.Role, Host: req.Host, Cmd: req.Cmd, Env: req.Env, Interactive: req.Interactive, Detach: req.Detach})
	if err != nil {
		return nil, err
	}
	if err := a.ensureEnvFile(ctx, req.Host, spec.EnvFile); err != nil {
		return nil, err
	}
	out.Container, out.Argv = name, cmd.Expand(o.Home)
	return out, nil
}

// auditExec writes Kamal's audit line of `app exec` on req's host (the
// command as Kamal joins it, secrets masked).
func (a *App) auditExec(ctx context.Context, req ExecRequest, version string) {
	cmd := strings.Join(req.Cmd, " ")
	if a.Redact != nil {
		cmd = a.Redact(cmd)
	}
	a.writeAudit(ctx, req.Host, req.Role, "Executed cmd '"+cmd+"' on app version "+version)
}

// execArgv is Kamal's execute_in_existing_container.
func execArgv(container string, req ExecRequest) []string {
	argv := []string{"docker", "exec"}
	if req.Interactive {
		argv = append(argv, "-it")
	}
	for _, kv := range req.Env {
		argv = append(argv, "--env", kv.Key+"="+kv.Value)
	}
	argv = append(argv, container)
	return append(argv, req.Cmd...)
}

// runningVersion is the version the current container c runs: the tag or
// digest of its image when that is the configuration's repository, else
// (Docker shows an image ID once the tag moved) the version in its name.
func runningVersion(cfg *kamal.Config, c *Container, fromName string) kamal.Version {
	src := "the running container " + c.Name
	if tag, ok := strings.CutPrefix(c.Image, cfg.Repository+":"); ok && kamal.ValidVersion(tag) {
		return kamal.Version{Value: tag, Source: src}
	}
	if d, ok := strings.CutPrefix(c.Image, cfg.Repository+"@"); ok && kamal.ValidVersion(d) {
		return kamal.Version{Value: d, Source: src}
	}
	return kamal.Version{Value: fromName, Source: src}
}

// ensureEnvFileScript writes stdin to the env file $1 unless it exists.
const ensureEnvFileScript = `trap 'exit 143' HUP INT TERM
envf=$1
[ -f "$envf" ] && exit 0
` + writeEnvFile

// roleSpec is the desired container of role on host (nil when the role
// does not run there).
func (a *App) roleSpec(host, role string) *kamal.Container {
	for _, hp := range a.Hosts {
		if hp.Host != host {
			continue
		}
		for _, c := range hp.Apps {
			if c.Role == role {
				return c
			}
		}
	}
	return nil
}

// ensureEnvFile writes env file f on host when it is missing.
func (a *App) ensureEnvFile(ctx context.Context, host string, f kamal.EnvFile) error {
	if f.Path == "" {
		return nil
	}
	argv := []string{"sh", "-c", ensureEnvFileScript, "sh", f.Path}
	if _, err := a.SSH.Run(ctx, host, argv, strings.NewReader(f.Content.Reveal())); err != nil {
		return fmt.Errorf("%w: %s: write env file %s: %w", ErrHost, host, f.Path, err)
	}
	return nil
}
