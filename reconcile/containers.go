package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// Container operations of an apply. Each goes through the host's Docker
// API when it is usable (no process starts on the host) and otherwise runs
// the docker CLI over SSH; both paths do the same thing.

// viaAPI runs f against host's Docker API when it is usable. handled is
// false when the caller must use the CLI instead: the API is not usable,
// or the channel failed (the host is then handled with the CLI for a
// while). An answer from the daemon, even an error, is final.
func (r *applyRun) viaAPI(ctx context.Context, host string, f func(*dockerAPI) error) (handled bool, err error) {
	d := r.a.dockerAPI()
	if !d.usable(host) {
		return false, nil
	}
	err = f(d)
	var ae *apiError
	if errors.As(err, &ae) {
		// The daemon's words may quote the container's command line or
		// its output: masked like a command's stderr.
		ae.Message = r.redact(ae.Message)
		return true, err
	}
	if err == nil || ctx.Err() != nil {
		return true, err
	}
	d.markBroken(host)
	r.log.Debug("docker API unusable; using the docker CLI", "host", host, "err", err)
	return false, nil
}

// inspectFormat prints a container's ID, name and kamal network address.
const inspectFormat = `{{.Id}} {{.Name}} {{with index .NetworkSettings.Networks "kamal"}}{{.IPAddress}}{{end}}`

func parseInspect(out []byte) (*liveContainer, error) {
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return nil, fmt.Errorf("%w: inspect: %q", ErrObserve, out)
	}
	c := &liveContainer{ID: f[0], Name: strings.TrimPrefix(f[1], "/")}
	if len(f) > 2 {
		c.IP = f[2]
	}
	return c, nil
}

// inspectContainer reads a container's ID, name and address on the kamal
// network.
func (r *applyRun) inspectContainer(ctx context.Context, host, ref string) (*liveContainer, error) {
	var c *liveContainer
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error {
		in, err := d.inspect(ctx, host, ref)
		if err == nil {
			c = in.live(kamal.DefaultNetwork)
		}
		return err
	}); ok {
		return c, err
	}
	out, err := r.a.SSH.Run(ctx, host, []string{"docker", "inspect", "--type", "container", "--format", inspectFormat, ref}, nil)
	if err != nil {
		return nil, err
	}
	return parseInspect(out)
}

// startContainer starts a created container and inspects it (its address
// exists only once it runs).
func (r *applyRun) startContainer(ctx context.Context, host, id string) (*liveContainer, error) {
	var c *liveContainer
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error {
		if err := d.start(ctx, host, id); err != nil {
			return err
		}
		in, err := d.inspect(ctx, host, id)
		if err == nil {
			c = in.live(kamal.DefaultNetwork)
		}
		return err
	}); ok {
		return c, err
	}
	script := `docker start "$2" >/dev/null && docker inspect --type container --format "$1" "$2"`
	out, err := r.a.SSH.Run(ctx, host, []string{"sh", "-c", script, "sh", inspectFormat, id}, nil)
	if err != nil {
		return nil, err
	}
	return parseInspect(out)
}

// stopContainer stops a container with the spec's stop timeout.
func (r *applyRun) stopContainer(ctx context.Context, host string, spec *kamal.Container, id string) error {
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.stop(ctx, host, id, spec.StopTimeout) }); ok {
		return err
	}
	_, err := r.a.SSH.Run(ctx, host, r.stopArgv(spec, id), nil)
	return err
}

// removeContainer removes a container that is not running; one that is
// gone already counts as removed.
func (r *applyRun) removeContainer(ctx context.Context, host, ref string) error {
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.remove(ctx, host, ref) }); ok {
		if errNotFound(err) {
			return nil
		}
		return err
	}
	_, err := r.a.SSH.Run(ctx, host, []string{"docker", "rm", "--", ref}, nil)
	var ee *ExitError
	if errors.As(err, &ee) && strings.Contains(ee.Stderr, "No such container") {
		return nil
	}
	return err
}

// renameContainer gives a container a new name.
func (r *applyRun) renameContainer(ctx context.Context, host, ref, name string) error {
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.rename(ctx, host, ref, name) }); ok {
		return err
	}
	_, err := r.a.SSH.Run(ctx, host, []string{"docker", "rename", ref, name}, nil)
	return err
}

// tagLatest moves the latest tag to the deployed image.
func (r *applyRun) tagLatest(ctx context.Context, host string) error {
	img, latest := r.a.Config.Image(), r.a.Config.LatestTag()
	repo, tag := splitRef(latest)
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.tag(ctx, host, img, repo, tag) }); ok {
		return err
	}
	_, err := r.a.SSH.Run(ctx, host, []string{"docker", "tag", img, latest}, nil)
	return err
}

// containerState is `docker inspect` of a booting container.
type containerState struct {
	Status       string
	Health       string
	RestartCount int
	ExitCode     int
}

func (r *applyRun) state(ctx context.Context, host, id string) (containerState, error) {
	var st containerState
	if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error {
		in, err := d.inspect(ctx, host, id)
		if err == nil {
			st = in.state()
		}
		return err
	}); ok {
		return st, err
	}
	out, err := r.a.SSH.Run(ctx, host, []string{"docker", "inspect", "--type", "container", "--format",
		`{"Status":{{json .State.Status}},"Health":{{if .State.Health}}{{json .State.Health.Status}}{{else}}""{{end}},"RestartCount":{{.RestartCount}},"ExitCode":{{.State.ExitCode}}}`, id}, nil)
	if err != nil {
		return containerState{}, err
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &st); err != nil {
		return st, fmt.Errorf("%w: %v", ErrObserve, err)
	}
	return st, nil
}

// imagePresent reports, through the Docker API, whether host already has
// img (with digest, the registry's, when known) and its service label:
// then the pull script need not run. known is false when the API could not
// say.
func (r *applyRun) imagePresent(ctx context.Context, host, img, digest string) (present bool, label string, known bool) {
	handled, err := r.viaAPI(ctx, host, func(d *dockerAPI) error {
		info, found, err := d.image(ctx, host, img)
		if err != nil || !found {
			return err
		}
		label = info.Config.Labels[LabelService]
		present = digest == "" || slices.ContainsFunc(info.RepoDigests, func(rd string) bool { return strings.Contains(rd, digest) })
		return nil
	})
	return present, label, handled && err == nil
}

// created is an app container created ahead of its start, so that the
// start (after the barrier, for non-primary roles) is all that is left.
type created struct {
	id      string
	name    string // the container's name (P-V)
	clash   string // ID of a container that held the name and was renamed away
	renamed string
	start   time.Time
	took    time.Duration
	started bool
	// audited is closed once the boot's audit lines are written: the
	// start waits for it, so that no container runs unrecorded even when
	// capstan dies right after the start.
	audited <-chan struct{}
}

// createScript, run with argv clash renamed envfile ndirs dir… docker
// create…, does what comes before a container's start in one round trip:
// rename a container holding the new name, make the role's directories,
// write its env file from stdin (0600, atomically) and create the
// container, printing its ID.
const createScript = `trap 'exit 143' HUP INT TERM
clash=$1 renamed=$2 envf=$3 ndirs=$4; shift 4
if [ -n "$clash" ]; then docker rename "$clash" "$renamed" || exit $?; fi
while [ "$ndirs" -gt 0 ]; do mkdir -p -- "$1" || exit $?; shift; ndirs=$((ndirs-1)); done
if [ -n "$envf" ]; then
` + writeEnvFile + `
fi
"$@"`

// writeEnvFile is the script fragment that writes stdin to the env file
// "$envf" (its directory made, mode 0600, atomically: a temp file renamed
// into place), exiting on failure. It is how every env file reaches a
// host.
const writeEnvFile = `  tmp="$envf.capstan-$$"
  trap 'rm -f -- "$tmp"' EXIT
  mkdir -p -- "${envf%/*}" && (umask 077 && cat > "$tmp") && chmod 600 -- "$tmp" && mv -f -- "$tmp" "$envf" || exit $?`

// runDirs are the directories a container needs made before it runs; the
// env file's own directories are made with the file.
func runDirs(spec *kamal.Container) []string {
	var dirs []string
	for _, d := range spec.Directories {
		if spec.EnvFile.Path == "" || !strings.HasPrefix(spec.EnvFile.Path, strings.TrimSuffix(d, "/")+"/") {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// createArgv turns Kamal's `docker run --detach …` line of an app
// container into the same `docker create …` line.
func createArgv(run []string) ([]string, error) {
	if len(run) < 3 || run[0] != "docker" || run[1] != "run" || run[2] != "--detach" {
		return nil, fmt.Errorf("not a `docker run --detach` line: %q", run[:min(len(run), 3)])
	}
	return append([]string{"docker", "create"}, run[3:]...), nil
}

// clearClash deals with old, the container holding the new container's
// name: one created and never started (left by a capstan killed between
// create and start) is removed, since nothing ever ran in it to roll back
// to; any other is to be renamed away (c.clash, c.renamed), as Kamal does.
// So is one that cannot be removed: the start a killed capstan sent may
// have reached Docker after it was observed.
func (r *applyRun) clearClash(ctx context.Context, host string, old *Container, c *created) {
	if old.State == "created" {
		err := r.removeContainer(ctx, host, old.ID)
		if err == nil {
			r.log.Info("removed a container created and never started", "host", host, "container", old.Name)
			return
		}
		r.log.Warn("a container created and never started could not be removed; renaming it away", "host", host, "container", old.Name, "err", err)
	}
	c.clash, c.renamed = old.ID, c.name+"_replaced_"+randomHex(8)
}

// auditBoot writes the audit lines of the boot of c ahead of it, as Kamal
// does (a line may name a boot that then failed, never the reverse):
// the rename of a container holding the name, then the boot. The channel
// is closed once they are written.
func (r *applyRun) auditBoot(ctx context.Context, host string, s Step, c *created) <-chan struct{} {
	var msgs []string
	if c.clash != "" {
		msgs = append(msgs, fmt.Sprintf("Renaming container %s to %s as already deployed on %s", c.name, c.renamed, host))
	}
	return r.audit(ctx, host, s.Role, append(msgs, "Booted app version "+r.a.Config.Version.Name())...)
}

// create renames, writes the env file and creates the container of step s
// on hp in one round trip, its audit lines written meanwhile (auditBoot);
// the container is started by deployRole. The result is never nil.
func (r *applyRun) create(ctx context.Context, hp *HostPlan, s Step) (*created, error) {
	a := r.a
	host, spec := hp.Host, s.spec
	c := &created{start: a.now(), name: spec.Name}
	home := hp.observed.Home
	runArgv, err := createArgv(spec.Run.Expand(home))
	if err != nil {
		return c, fmt.Errorf("%w: %s: %w", ErrHost, spec.Name, err)
	}
	if old := hp.observed.byName(spec.Name); old != nil {
		r.clearClash(ctx, host, old, c)
	}
	c.audited = r.auditBoot(ctx, host, s, c)
	dirs := runDirs(spec)
	// The rename goes through the API when it can (no docker CLI to start);
	// else the script does it.
	scriptClash := c.clash
	if c.clash != "" {
		if ok, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.rename(ctx, host, c.clash, c.renamed) }); ok {
			if err != nil {
				c.took = a.now().Sub(c.start)
				return c, fmt.Errorf("%w: rename %s: %w", ErrHost, spec.Name, err)
			}
			scriptClash = ""
		}
	}
	argv := []string{"sh", "-c", createScript, "sh", scriptClash, c.renamed, spec.EnvFile.Path, fmt.Sprint(len(dirs))}
	argv = append(argv, kamal.ExpandHome(dirs, home)...)
	argv = append(argv, runArgv...)
	var stdin io.Reader
	if spec.EnvFile.Path != "" {
		stdin = strings.NewReader(spec.EnvFile.Content.Reveal())
	}
	out, err := a.SSH.Run(ctx, host, argv, stdin)
	c.took = a.now().Sub(c.start)
	if err != nil {
		return c, fmt.Errorf("%w: create %s: %w", ErrHost, spec.Name, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return c, fmt.Errorf("%w: create %s: no container ID in %q", ErrObserve, spec.Name, out)
	}
	c.id = f[len(f)-1]
	return c, nil
}

// redact masks secrets in s (App.Redact).
func (r *applyRun) redact(s string) string {
	if r.a.Redact != nil {
		return r.a.Redact(s)
	}
	return s
}
