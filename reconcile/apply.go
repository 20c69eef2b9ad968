package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Result is what Apply did.
type Result struct {
	Plan     *Plan         `json:"-"`
	Version  string        `json:"version"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Hosts    []*HostResult `json:"hosts"`
	// RolledBack lists hosts switched back to the previous version after a
	// later host failed its health check.
	RolledBack []string `json:"rolled_back,omitempty"`
}

// HostResult is what Apply did on one host.
type HostResult struct {
	Host  string        `json:"host"`
	Steps []*StepResult `json:"steps"`
	Error string        `json:"error,omitempty"`
}

// StepResult is one executed step with its timing and, on failure, what
// explains it.
type StepResult struct {
	Step
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Phases splits a deploy: create (rename, env file, docker create),
	// wait (for the primary role's barrier), start, healthy+switch (ready,
	// for a role without a proxy), stop (the old container).
	Phases map[string]time.Duration `json:"phases,omitempty"`
	// Switched is when the new container took the traffic (or was judged
	// ready, for a role without a proxy).
	Switched time.Time `json:"switched,omitzero"`
	Error    string    `json:"error,omitempty"`
	// Logs are the new container's last log lines when it failed.
	Logs string `json:"logs,omitempty"`
}

// Failed reports whether any host failed.
func (r *Result) Failed() bool {
	for _, h := range r.Hosts {
		if h.Error != "" {
			return true
		}
	}
	return false
}

// switched is a role on a host that now runs the new container, kept to
// switch back after a later failure.
type switched struct {
	host  string
	spec  *kamal.Container
	route *proxy.Route
	old   *liveContainer // nil when nothing ran before
	new   *liveContainer
}

// liveContainer is a container as apply handles it.
type liveContainer struct {
	ID   string // full ID
	Name string
	IP   string // on the kamal network
}

func (c *liveContainer) target(port int) proxy.Target {
	t := proxy.Target{Container: c.ID[:min(12, len(c.ID))], Port: port}
	if ip, err := netip.ParseAddr(c.IP); err == nil {
		t.IP = ip
	}
	return t
}

// applyRun is the state of one Apply.
type applyRun struct {
	a    *App
	plan *Plan
	res  *Result
	log  *slog.Logger

	mu       sync.Mutex
	hostRes  map[string]*HostResult
	switched []switched

	auditWG sync.WaitGroup
	// proxyBoot holds, per host, its proxy's boot in flight.
	proxyBoot map[string]*proxyBoot

	barrier     chan struct{} // closed when the first primary container is healthy
	barrierOnce sync.Once
	barrierErr  error
	primaryLeft int // primary-role deploys started and not finished

	// created holds app containers created ahead of their start, by
	// createKey.
	created map[string]*created
	// networks and logins hold the hosts where this apply created the
	// network and logged in to the registry.
	networks, logins sync.Map
	// slots bounds the hosts worked on at once (App.Parallel); a host
	// waiting at the barrier gives its slot back meanwhile.
	slots chan struct{}
}

func createKey(host, role string) string { return host + "\x00" + role }

// Apply executes plan, the value Plan returned, in Kamal's order. Hosts that
// fail are reported in the result and converge on the next pass; the error
// is non-nil when any host failed.
func (a *App) Apply(ctx context.Context, plan *Plan) (*Result, error) {
	r := &applyRun{a: a, plan: plan, log: a.log().With("service", a.Config.Service, "version", plan.Version),
		res: &Result{Plan: plan, Version: plan.Version, Started: a.now()}, hostRes: map[string]*HostResult{}, proxyBoot: map[string]*proxyBoot{},
		barrier: make(chan struct{}), created: map[string]*created{}, slots: make(chan struct{}, a.parallel())}
	for _, hp := range plan.Hosts {
		hr := &HostResult{Host: hp.Host, Steps: []*StepResult{}}
		if hp.Error != "" {
			hr.Error = hp.Error
		}
		r.hostRes[hp.Host] = hr
		r.res.Hosts = append(r.res.Hosts, hr)
	}
	defer func() { r.res.Finished = a.now() }()
	if plan.Empty() {
		return r.res, r.err()
	}
	r.run(ctx)
	return r.res, r.err()
}

func (r *applyRun) err() error {
	var errs []error
	for _, h := range r.res.Hosts {
		if h.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", h.Host, h.Error))
		}
	}
	return errors.Join(errs...)
}

func (r *applyRun) fail(host string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hr := r.hostRes[host]
	if hr.Error == "" {
		hr.Error = err.Error()
	}
}

func (r *applyRun) failed(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hostRes[host].Error != ""
}

func (r *applyRun) record(host string, sr *StepResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hostRes[host].Steps = append(r.hostRes[host].Steps, sr)
}

// hostsWith returns the reachable, not yet failed hosts with a step of one
// of kinds, in plan order.
func (r *applyRun) hostsWith(kinds ...StepKind) []*HostPlan {
	var out []*HostPlan
	for _, hp := range r.plan.Hosts {
		if hp.Error != "" || r.failed(hp.Host) {
			continue
		}
		for _, s := range hp.Steps {
			if containsKind(kinds, s.Kind) {
				out = append(out, hp)
				break
			}
		}
	}
	return out
}

func containsKind(list []StepKind, k StepKind) bool {
	for _, x := range list {
		if x == k {
			return true
		}
	}
	return false
}

func (r *applyRun) run(ctx context.Context) {
	a := r.a
	defer r.auditWG.Wait()
	// 1. Pull on every host that boots the app before anything switches,
	// and take the deploy lock meanwhile (Kamal pulls, then locks; doing
	// both at once saves a round trip and changes nothing on the hosts).
	deployHosts := r.hostsWith(StepDeploy)
	lockDone := make(chan struct{})
	var unlock func()
	var lockErr error
	go func() {
		defer close(lockDone)
		unlock, lockErr = r.lock(ctx)
	}()
	r.forEachHost(ctx, names(deployHosts), func(ctx context.Context, i int, host string) {
		start := a.now()
		pulled, err := r.pull(ctx, host)
		sr := &StepResult{Step: Step{Kind: StepPull, Host: host, Container: a.Config.Image(), Reason: pulled}, Start: start, End: a.now()}
		if err != nil {
			sr.Error = err.Error()
			r.fail(host, err)
		}
		r.record(host, sr)
	})
	<-lockDone
	if lockErr != nil {
		for _, hp := range r.plan.Hosts {
			if hp.Error == "" && len(hp.Steps) > 0 {
				r.fail(hp.Host, lockErr)
			}
		}
		return
	}
	defer unlock()
	defer r.waitProxyBoots()
	// Containers created and never started (a barrier or group that
	// failed, a cancelled pass) are removed, as if never created.
	defer r.removeUnstarted(ctx)
	if ctx.Err() != nil {
		return
	}

	// 2. Accessories (hosts with one to boot, in parallel): an app may
	// need them when it starts.
	acc := r.hostsWith(StepBootAccessory, StepRebootAccessory)
	r.forEachHost(ctx, names(acc), func(ctx context.Context, i int, host string) {
		if err := r.bootAccessories(ctx, acc[i]); err != nil {
			r.fail(host, err)
		}
	})

	// 3. Per host, in parallel: network, proxy (in the background) and, on
	// the hosts of the first boot group, the app containers, created and
	// then started at once: primary role first, the other roles at the
	// barrier.
	groups := bootGroups(r.primaryFirst(r.hostsWith(StepDeploy, StepReassert)), a.Config.Boot.Limit)
	inGroup := map[string]bool{}
	if len(groups) > 0 {
		for _, hp := range groups[0] {
			inGroup[hp.Host] = true
		}
	}
	if !slices.ContainsFunc(r.hostsWith(StepDeploy), r.hasPrimaryDeploy) {
		r.openBarrier(nil)
	} else if len(groups) > 0 {
		r.countPrimaries(groups[0])
	}
	var healthFailure atomic.Bool
	deploy := func(ctx context.Context, hp *HostPlan) {
		if err := r.deployHost(ctx, hp); err != nil {
			r.fail(hp.Host, err)
			if errors.Is(err, ErrUnhealthy) {
				healthFailure.Store(true)
			}
		}
	}
	prep := r.hostsWith(StepBootProxy, StepDeploy, StepReassert)
	r.forEachHost(ctx, names(prep), func(ctx context.Context, i int, host string) {
		hp := prep[i]
		if err := r.prepare(ctx, hp, inGroup[host]); err != nil {
			r.fail(host, err)
			if inGroup[host] {
				r.primariesGone(hp)
			}
			return
		}
		if inGroup[host] {
			deploy(ctx, hp)
		}
	})

	// 4. Later boot groups, after boot.wait each; hosts in a group in
	// parallel. A bad release stops them: hosts that already switched go
	// back unless the app opted out.
	for gi := 0; gi < len(groups); gi++ {
		if gi > 0 {
			if wait := a.Config.Boot.Wait; wait > 0 && !healthFailure.Load() {
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(wait) * time.Second):
				}
			}
			if ctx.Err() == nil && !healthFailure.Load() {
				var g []*HostPlan
				for _, hp := range groups[gi] {
					if !r.failed(hp.Host) {
						g = append(g, hp)
					}
				}
				r.countPrimaries(g)
				r.forEachHost(ctx, names(g), func(ctx context.Context, i int, host string) { deploy(ctx, g[i]) })
			}
		}
		if healthFailure.Load() {
			for _, later := range groups[gi+1:] {
				for _, hp := range later {
					r.fail(hp.Host, fmt.Errorf("%w: not attempted after an earlier boot group failed", ErrBarrier))
				}
			}
			if !a.NoRollback {
				r.rollback(ctx)
			}
			return
		}
	}
	if ctx.Err() != nil {
		return
	}

	// 4. Once every booted host runs the version, move the latest tag;
	// then stale and unmanaged containers, and prune.
	finish := r.hostsWith(StepDeploy, StepStopStale, StepStopUnmanaged, StepPrune)
	r.forEachHost(ctx, names(finish), func(ctx context.Context, i int, host string) {
		hp := finish[i]
		if slices.ContainsFunc(hp.Steps, func(s Step) bool { return s.Kind == StepDeploy }) {
			if err := r.tagLatest(ctx, host); err != nil {
				r.fail(host, fmt.Errorf("%w: tag latest: %w", ErrHost, err))
				return
			}
			r.audit(ctx, host, "", fmt.Sprintf("Tagging %s as the latest image", a.Config.Image()))
		}
		if err := r.cleanup(ctx, hp); err != nil {
			r.fail(host, err)
		}
	})
}

// removeUnstarted removes the containers created for a start that never
// came.
func (r *applyRun) removeUnstarted(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	r.mu.Lock()
	left := map[string]*created{}
	for k, c := range r.created {
		if !c.started && c.id != "" {
			left[k] = c
		}
	}
	r.mu.Unlock()
	for k, c := range left {
		host, _, _ := strings.Cut(k, "\x00")
		if err := r.removeContainer(ctx, host, c.id); err != nil {
			r.log.Warn("remove a container that was never started", "host", host, "container", c.id, "err", err)
			continue
		}
		r.unrename(ctx, host, c)
	}
}

// unrename gives the container that create renamed away its name back.
func (r *applyRun) unrename(ctx context.Context, host string, c *created) {
	if c.clash == "" {
		return
	}
	if err := r.renameContainer(ctx, host, c.clash, c.name); err != nil {
		r.log.Warn("rename a replaced container back", "host", host, "container", c.clash, "name", c.name, "err", err)
	}
}

func names(hps []*HostPlan) []string {
	out := make([]string, len(hps))
	for i, h := range hps {
		out[i] = h.Host
	}
	return out
}

// pullScript, run with argv image, service-label format: inspect the
// image; if absent (or, with a known digest, not that digest) log in with
// the password on stdin when a user is given, pull, and inspect again. It
// prints "present" or "pulled" and then the inspect line.
const pullScript = `img=$1 fmt=$2 digest=$3 server=$4 user=$5
if out=$(docker image inspect --format "$fmt" "$img" 2>/dev/null) && { [ -z "$digest" ] || case $out in *"$digest"*) true;; *) false;; esac; }; then
  echo present; echo "$out"; exit 0
fi
if [ -n "$user" ]; then
  docker login "$server" -u "$user" --password-stdin >/dev/null || exit $?
else
  cat >/dev/null
fi
docker pull --quiet "$img" >/dev/null || exit $?
echo pulled
docker image inspect --format "$fmt" "$img"`

// pull makes sure host has the image in one round trip: skipped when it
// already has it (with the registry's digest, when known); else log in
// and pull. Then check the service label, as Kamal does.
func (r *applyRun) pull(ctx context.Context, host string) (string, error) {
	a := r.a
	img := a.Config.Image()
	labelled := func(how, label string) (string, error) {
		if label != a.Config.Service {
			return "", fmt.Errorf("%w: image %s is missing the 'service' label (want %q, found %q)", ErrPull, img, a.Config.Service, label)
		}
		if how == "pulled" {
			r.audit(ctx, host, "", "Pulled image with version "+a.Config.Version.Name())
		}
		return how, nil
	}
	reg := a.Config.Registry
	user, server := "", reg.Server
	if reg.Username.Reveal() != "" && !reg.Local() {
		user = reg.Username.Reveal()
	}
	present, label, known := r.imagePresent(ctx, host)
	if known && present {
		return labelled("present", label)
	}
	// The API pulls only with credentials from deploy.yml: without them the
	// docker CLI may still use those in the host's ~/.docker/config.json.
	if known && user != "" {
		auth := registryAuth(server, user, reg.Password.Reveal())
		if handled, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.pull(ctx, host, img, auth) }); handled {
			if err != nil {
				return "", fmt.Errorf("%w: pull %s: %w", ErrPull, img, err)
			}
			if present, label, known := r.imagePresent(ctx, host); known && present {
				return labelled("pulled", label)
			}
		}
	}
	argv := []string{"sh", "-c", pullScript, "sh", img, `{{json .RepoDigests}}|{{index .Config.Labels "service"}}`, a.ImageDigest, server, user}
	out, err := a.SSH.Run(ctx, host, argv, strings.NewReader(reg.Password.Reveal()))
	if err != nil {
		return "", fmt.Errorf("%w: pull %s: %w", ErrPull, img, err)
	}
	how, info, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	_, label, _ = strings.Cut(strings.TrimSpace(info), "|")
	return labelled(how, label)
}

// lockScript takes Kamal's lock directory $1 (exit 3 when it exists) and
// writes its details from stdin; a failed write releases it again.
const lockScript = `mkdir -p .kamal && { mkdir "$1" 2>/dev/null || { [ -d "$1" ] && exit 3; mkdir "$1"; }; } || exit
(umask 022 && cat > "$1/details") || { rc=$?; rm -rf -- "$1"; exit $rc; }`

// lock takes Kamal's deploy lock (atomic mkdir on the lock host), waiting
// up to LockTimeout for a lock someone else holds. The returned func
// releases it, even after ctx is cancelled.
func (r *applyRun) lock(ctx context.Context) (func(), error) {
	a := r.a
	host := a.LockHost()
	timeout := a.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	deadline := a.now().Add(timeout)
	dir := a.LockDir()
	msg := "Automatic deploy lock"
	if a.LockID != "" {
		msg += " (capstan " + a.LockID + ")"
	}
	details := fmt.Sprintf("Locked by: %s at %s\nVersion: %s\nMessage: %s", a.performer(), a.now().UTC().Format(time.RFC3339), a.Config.Version.Name(), msg)
	enc := base64.StdEncoding.EncodeToString([]byte(details)) + "\n"
	for {
		// Take it and write its details in one round trip; exit 3 means
		// someone holds it.
		_, err := a.SSH.Run(ctx, host, []string{"sh", "-c", lockScript, "sh", dir}, strings.NewReader(enc))
		if err == nil {
			break
		}
		if ExitCode(err) != 3 {
			return nil, fmt.Errorf("%w: lock on %s: %w", ErrHost, host, err)
		}
		holder, _ := a.SSH.Run(ctx, host, []string{"cat", dir + "/details"}, nil)
		held := strings.TrimSpace(string(holder))
		if b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(held, "\n", "")); err == nil {
			held = string(b)
		}
		if a.LockID != "" && strings.Contains(held, "(capstan "+a.LockID+")") {
			r.log.Warn("reclaiming a deploy lock left by an earlier run of this capstan", "host", host, "lock", firstLine(held))
			if _, err := a.SSH.Run(ctx, host, []string{"rm", "-r", "--", dir}, nil); err != nil {
				return nil, fmt.Errorf("%w: reclaim lock on %s: %w", ErrHost, host, err)
			}
			continue
		}
		if a.now().After(deadline) {
			return nil, fmt.Errorf("%w on %s (%s) after waiting %s: %s", ErrLocked, host, dir, timeout, strings.ReplaceAll(held, "\n", "; "))
		}
		r.log.Info("deploy lock held, waiting", "host", host, "holder", firstLine(held))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := a.SSH.Run(cctx, host, []string{"rm", "-r", "--", dir}, nil); err != nil {
			r.log.Error("release deploy lock", "host", host, "err", err)
		}
	}, nil
}

func (a *App) performer() string {
	if a.Performer != "" {
		return a.Performer
	}
	return "capstan"
}

// audit appends a Kamal-format line to the audit log on host; the line goes
// over stdin. Failures are logged, not fatal (Kamal's audit is best-effort
// too).
func (r *applyRun) audit(ctx context.Context, host, role, msg string) {
	a := r.a
	line := fmt.Sprintf("[%s] [%s]", a.now().UTC().Format(time.RFC3339), a.performer())
	if a.Config.Destination != "" {
		line += " [" + a.Config.Destination + "]"
	}
	if role != "" {
		line += " [" + role + "]"
	}
	line += " " + msg + "\n"
	argv := []string{"sh", "-c", `mkdir -p .kamal && cat >> "$1"`, "sh", a.AuditLog()}
	r.auditWG.Add(1)
	go func() {
		defer r.auditWG.Done()
		if _, err := a.SSH.Run(context.WithoutCancel(ctx), host, argv, strings.NewReader(line)); err != nil {
			r.log.Warn("audit log", "host", host, "err", err)
		}
	}()
}

// login logs host in to deploy.yml's registry (password on stdin), once
// per apply, before a proxy or accessory image is run there: the app image
// is pulled through the API with its own credentials, which leaves no
// login behind, and Kamal logs in before booting those too.
func (r *applyRun) login(ctx context.Context, hp *HostPlan) error {
	reg := r.a.Config.Registry
	user := reg.Username.Reveal()
	if user == "" || reg.Local() {
		return nil
	}
	if !slices.ContainsFunc(hp.Steps, func(s Step) bool {
		return s.Kind == StepBootProxy || s.Kind == StepBootAccessory || s.Kind == StepRebootAccessory
	}) {
		return nil
	}
	if _, done := r.logins.LoadOrStore(hp.Host, true); done {
		return nil
	}
	argv := []string{"sh", "-c", `docker login "$1" -u "$2" --password-stdin >/dev/null`, "sh", reg.Server, user}
	if _, err := r.a.SSH.Run(ctx, hp.Host, argv, strings.NewReader(reg.Password.Reveal())); err != nil {
		r.logins.Delete(hp.Host)
		return fmt.Errorf("%w: registry login: %w", ErrHost, err)
	}
	return nil
}

// ensureNetwork creates the app network on a host that lacks it (once per
// apply).
func (r *applyRun) ensureNetwork(ctx context.Context, hp *HostPlan) error {
	if hp.observed.onNetwork(hp.desired.Network) {
		return nil
	}
	if _, done := r.networks.LoadOrStore(hp.Host, true); done {
		return nil
	}
	out, err := r.a.SSH.Run(ctx, hp.Host, []string{"sh", "-c", `docker network create "$1" 2>&1 || docker network inspect "$1" >/dev/null`, "sh", hp.desired.Network}, nil)
	if err != nil {
		r.networks.Delete(hp.Host)
		return fmt.Errorf("%w: docker network create %s: %w: %s", ErrHost, hp.desired.Network, err, out)
	}
	return nil
}

// prepare makes the network and boots the proxy (in the background) on a
// host, and with precreate creates its app containers, to be started
// later.
func (r *applyRun) prepare(ctx context.Context, hp *HostPlan, precreate bool) error {
	a := r.a
	host := hp.Host
	if err := r.ensureNetwork(ctx, hp); err != nil {
		return err
	}
	if err := r.login(ctx, hp); err != nil {
		return err
	}
	if a.routed(hp.desired) && a.Proxy != nil {
		// The proxy boots while the new containers start: only a switch
		// needs it (proxyReady).
		pb := &proxyBoot{done: make(chan struct{})}
		r.mu.Lock()
		r.proxyBoot[host] = pb
		r.mu.Unlock()
		go func() {
			defer close(pb.done)
			start := a.now()
			err := a.Proxy.Boot(context.WithoutCancel(ctx), host, a.routesOn(hp.desired))
			for _, s := range hp.Steps {
				if s.Kind == StepBootProxy {
					sr := &StepResult{Step: s, Start: start, End: a.now()}
					if err != nil {
						sr.Error = err.Error()
					}
					r.record(host, sr)
				}
			}
			if err != nil {
				pb.err = fmt.Errorf("%w: boot proxy: %w", ErrHost, err)
				r.fail(host, pb.err)
			}
		}()
	}
	for _, s := range hp.Steps {
		if !precreate || s.Kind != StepDeploy {
			continue
		}
		if err := r.createFor(ctx, hp, s); err != nil {
			return err
		}
	}
	return nil
}

// bootAccessories boots or reboots the accessories of a host.
func (r *applyRun) bootAccessories(ctx context.Context, hp *HostPlan) error {
	if err := r.ensureNetwork(ctx, hp); err != nil {
		return err
	}
	if err := r.login(ctx, hp); err != nil {
		return err
	}
	for _, s := range hp.Steps {
		if s.Kind != StepBootAccessory && s.Kind != StepRebootAccessory {
			continue
		}
		sr := &StepResult{Step: s, Start: r.a.now()}
		err := r.bootAccessory(ctx, hp, s)
		sr.End = r.a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *applyRun) bootAccessory(ctx context.Context, hp *HostPlan, s Step) error {
	a := r.a
	host, spec := hp.Host, s.spec
	if c := hp.observed.byName(spec.Name); c != nil {
		if s.Kind == StepBootAccessory {
			// It exists but is stopped: start it (its data stays).
			if _, err := a.SSH.Run(ctx, host, []string{"docker", "start", spec.Name}, nil); err != nil {
				return fmt.Errorf("%w: start accessory %s: %w", ErrHost, spec.Name, err)
			}
			r.audit(ctx, host, "", "Started "+s.Role+" accessory")
			return nil
		}
		if _, err := a.SSH.Run(ctx, host, []string{"sh", "-c", `docker stop "$1" >/dev/null && docker rm "$1" >/dev/null`, "sh", spec.Name}, nil); err != nil {
			return fmt.Errorf("%w: remove accessory %s: %w", ErrHost, spec.Name, err)
		}
	}
	if err := r.uploadRunFiles(ctx, hp, spec); err != nil {
		return err
	}
	if _, err := a.SSH.Run(ctx, host, kamal.ExpandHome(spec.Run.Argv, hp.observed.Home), nil); err != nil {
		return fmt.Errorf("%w: docker run accessory %s: %w", ErrHost, spec.Name, err)
	}
	r.audit(ctx, host, "", "Booted "+s.Role+" accessory")
	return nil
}

// uploadRunFiles creates the container's directories and uploads its env
// file (0600).
func (r *applyRun) uploadRunFiles(ctx context.Context, hp *HostPlan, spec *kamal.Container) error {
	a := r.a
	if dirs := runDirs(spec); len(dirs) > 0 {
		argv := append([]string{"mkdir", "-p", "--"}, kamal.ExpandHome(dirs, hp.observed.Home)...)
		if _, err := a.SSH.Run(ctx, hp.Host, argv, nil); err != nil {
			return fmt.Errorf("%w: mkdir for %s: %w", ErrHost, spec.Name, err)
		}
	}
	if spec.EnvFile.Path != "" {
		if err := a.SSH.Upload(ctx, hp.Host, spec.EnvFile.Path, 0o600, []byte(spec.EnvFile.Content.Reveal())); err != nil {
			return fmt.Errorf("%w: upload env file %s: %w", ErrHost, spec.EnvFile.Path, err)
		}
	}
	return nil
}

// proxyBoot is a proxy boot in flight; err is set before done closes.
type proxyBoot struct {
	done chan struct{}
	err  error
}

// waitProxyBoots waits for every proxy boot started by prepare.
func (r *applyRun) waitProxyBoots() {
	r.mu.Lock()
	boots := make([]*proxyBoot, 0, len(r.proxyBoot))
	for _, pb := range r.proxyBoot {
		boots = append(boots, pb)
	}
	r.mu.Unlock()
	for _, pb := range boots {
		<-pb.done
	}
}

// proxyReady waits for host's proxy boot (if one was started) and returns
// its error.
func (r *applyRun) proxyReady(ctx context.Context, host string) error {
	r.mu.Lock()
	pb := r.proxyBoot[host]
	r.mu.Unlock()
	if pb == nil {
		return nil
	}
	select {
	case <-pb.done:
		return pb.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hasPrimaryDeploy reports whether hp deploys the primary role (a host has
// at most one deploy step per role).
func (r *applyRun) hasPrimaryDeploy(hp *HostPlan) bool {
	return slices.ContainsFunc(hp.Steps, func(s Step) bool { return s.Kind == StepDeploy && s.Role == r.a.Config.PrimaryRole })
}

// primaryFirst orders hosts deploying the primary role first (stable), so
// the first boot group can open the barrier (Kamal: "primary hosts and
// roles are returned first").
func (r *applyRun) primaryFirst(hps []*HostPlan) []*HostPlan {
	rank := func(hp *HostPlan) int {
		if r.hasPrimaryDeploy(hp) {
			return 0
		}
		return 1
	}
	out := slices.Clone(hps)
	slices.SortStableFunc(out, func(x, y *HostPlan) int { return rank(x) - rank(y) })
	return out
}

// countPrimaries adds the primary-role deploys of a boot group about to
// start to those the barrier waits on; with none left anywhere, the
// barrier opens.
func (r *applyRun) countPrimaries(g []*HostPlan) {
	r.mu.Lock()
	for _, hp := range g {
		if r.hasPrimaryDeploy(hp) {
			r.primaryLeft++
		}
	}
	left := r.primaryLeft
	r.mu.Unlock()
	if left == 0 {
		r.openBarrier(nil)
	}
}

// primariesGone counts the primary-role deploy of a host that will not
// start as finished.
func (r *applyRun) primariesGone(hp *HostPlan) {
	if r.hasPrimaryDeploy(hp) {
		r.primaryFinished()
	}
}

// forEachHost runs f for each host in parallel, at most App.Parallel at
// once (see slots).
func (r *applyRun) forEachHost(ctx context.Context, hosts []string, f func(ctx context.Context, i int, host string)) {
	forEachHost(ctx, r.slots, hosts, f)
}

// waitBarrier waits for the barrier without holding a slot, so that the
// primary-role hosts it waits for can run. It returns the barrier's
// verdict.
func (r *applyRun) waitBarrier(ctx context.Context) error {
	select {
	case <-r.barrier:
		return r.barrierErr
	default:
	}
	<-r.slots
	defer func() { r.slots <- struct{}{} }()
	select {
	case <-r.barrier:
		return r.barrierErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// primaryFinished counts a finished primary-role deploy; when none is left
// and none was healthy, the other roles give up (not a health failure).
func (r *applyRun) primaryFinished() {
	r.mu.Lock()
	r.primaryLeft--
	left := r.primaryLeft
	r.mu.Unlock()
	if left <= 0 {
		r.openBarrier(fmt.Errorf("%w: no primary-role container could be booted", ErrHost))
	}
}

func (r *applyRun) openBarrier(err error) {
	r.barrierOnce.Do(func() {
		r.barrierErr = err
		close(r.barrier)
	})
}

// bootGroups slices hosts by boot.limit ("N" hosts or "N%").
func bootGroups(hosts []*HostPlan, limit string) [][]*HostPlan {
	n := len(hosts)
	if limit != "" && n > 0 {
		if strings.HasSuffix(limit, "%") {
			if p, err := strconv.Atoi(strings.TrimSuffix(limit, "%")); err == nil && p > 0 {
				n = max(1, len(hosts)*p/100)
			}
		} else if v, err := strconv.Atoi(limit); err == nil && v > 0 {
			n = v
		}
	}
	var out [][]*HostPlan
	for len(hosts) > 0 {
		k := min(n, len(hosts))
		out = append(out, hosts[:k])
		hosts = hosts[k:]
	}
	return out
}

// deployHost boots every role deploy of a host, primary role first.
func (r *applyRun) deployHost(ctx context.Context, hp *HostPlan) error {
	var steps []Step
	for _, s := range hp.Steps {
		if s.Kind == StepDeploy {
			steps = append(steps, s)
		}
	}
	primary := r.a.Config.PrimaryRole
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].Role == primary && steps[j].Role != primary })
	for _, s := range hp.Steps {
		if s.Kind == StepReassert {
			steps = append(steps, s)
		}
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.Kind == StepReassert {
			if err := r.reassert(ctx, hp, s); err != nil {
				return err
			}
			continue
		}
		var waited time.Duration
		if s.Role != primary {
			w0 := r.a.now()
			err := r.waitBarrier(ctx)
			waited = r.a.now().Sub(w0)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("%s on %s not booted: %w", s.Role, hp.Host, err)
			}
		}
		// A step in flight finishes even when ctx is cancelled (SIGTERM):
		// a host is never left half-switched.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.stepTimeout())
		err := r.deployRole(sctx, hp, s, waited)
		cancel()
		if s.Role == primary {
			r.primaryFinished()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// reassert points a route back at the container that should serve it.
func (r *applyRun) reassert(ctx context.Context, hp *HostPlan, s Step) (err error) {
	a := r.a
	sr := &StepResult{Step: s, Start: a.now()}
	defer func() {
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
	}()
	route, ok := a.Route(s.Role)
	if !ok || s.spec.Proxy == nil {
		return nil
	}
	if err := r.proxyReady(ctx, hp.Host); err != nil {
		return err
	}
	c, err := r.inspectContainer(ctx, hp.Host, s.Container)
	if err != nil {
		return fmt.Errorf("%w: inspect %s: %w", ErrHost, s.Container, err)
	}
	if _, err := a.Proxy.Reassert(ctx, hp.Host, []proxy.Deployment{{Route: route, Target: c.target(s.spec.Proxy.AppPort)}}); err != nil {
		return fmt.Errorf("%w: route %s to %s: %w", ErrHost, route.Name(), s.Container, err)
	}
	return nil
}

func (r *applyRun) stepTimeout() time.Duration {
	c := r.a.Config
	return time.Duration(c.DeployTimeout+c.DrainTimeout+c.ReadinessDelay)*time.Second + 2*time.Minute
}

// createFor creates step s's container on hp ahead of its start and keeps
// it for deployRole; a failure is recorded as the step's.
func (r *applyRun) createFor(ctx context.Context, hp *HostPlan, s Step) error {
	c, err := r.create(ctx, hp, s)
	if err != nil {
		if c.id == "" {
			// The name may have been moved away before create failed.
			r.unrename(context.WithoutCancel(ctx), hp.Host, c)
		}
		sr := &StepResult{Step: s, Start: c.start, End: r.a.now(), Error: err.Error(), Phases: map[string]time.Duration{"create": c.took}}
		r.record(hp.Host, sr)
		return err
	}
	r.mu.Lock()
	r.created[createKey(hp.Host, s.Role)] = c
	r.mu.Unlock()
	return nil
}

// deployRole starts the new container of one role on one host (created by
// prepare, or now), waits for it to be healthy, switches traffic and stops
// the old container.
func (r *applyRun) deployRole(ctx context.Context, hp *HostPlan, s Step, waited time.Duration) (err error) {
	a := r.a
	host, spec := hp.Host, s.spec
	r.mu.Lock()
	c := r.created[createKey(host, s.Role)]
	r.mu.Unlock()
	if c == nil {
		if err := r.createFor(ctx, hp, s); err != nil {
			return err
		}
		r.mu.Lock()
		c = r.created[createKey(host, s.Role)]
		r.mu.Unlock()
	}
	sr := &StepResult{Step: s, Start: c.start, Phases: map[string]time.Duration{"create": c.took}}
	if waited > 0 {
		sr.Phases["wait"] = waited
	}
	defer func() {
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(host, sr)
	}()
	phase := func(name string, since time.Time) { sr.Phases[name] = a.now().Sub(since) }
	log := r.log.With("host", host, "role", s.Role)

	// The container serving now (as observed); it was renamed by create
	// if it held the new name.
	var old *liveContainer
	if o := hp.observed.byName(s.From); s.From != "" && o != nil {
		old = &liveContainer{ID: o.ID, Name: o.Name}
		if o.ID == c.clash {
			old.Name = c.renamed
		}
	}
	r.audit(ctx, host, s.Role, "Booted app version "+a.Config.Version.Name())
	t0 := a.now()
	nw, err := r.startContainer(ctx, host, c.id)
	if err != nil {
		// Left unstarted: removed at the end, the replaced name given back.
		return fmt.Errorf("%w: start %s: %w", ErrHost, spec.Name, err)
	}
	r.mu.Lock()
	c.started = true // from here on a failure stops it rather than removes it
	r.mu.Unlock()
	started := a.now()
	id := nw.ID
	phase("start", t0)

	// Healthy, then switch (proxied) or judged by Docker (not proxied).
	t1 := a.now()
	route, proxied := a.Route(s.Role)
	if proxied && spec.Proxy != nil && a.Proxy != nil {
		var from proxy.Target
		if old != nil {
			from = old.target(spec.Proxy.AppPort)
		}
		err = r.proxyReady(ctx, host)
		if err == nil {
			err = r.watchWhile(ctx, host, id, func(ctx context.Context) error {
				return a.Proxy.Switch(ctx, host, route, from, nw.target(spec.Proxy.AppPort))
			})
		}
	} else {
		err = r.waitReady(ctx, host, id, started)
	}
	phase("healthy+switch", t1)
	// The first healthy primary container lets the other roles boot; the
	// first unhealthy one stops them (Kamal's barrier). A host that fails
	// for another reason (connection lost) decides nothing.
	if s.Role == a.Config.PrimaryRole {
		switch {
		case err == nil:
			r.openBarrier(nil)
		case errors.Is(err, proxy.ErrUnhealthy) || errors.Is(err, ErrUnhealthy):
			r.openBarrier(fmt.Errorf("%w: %w", ErrBarrier, err))
		}
	}
	if err != nil {
		sr.Logs = r.containerLogs(host, id)
		if proxied && spec.Proxy != nil && a.Proxy != nil && old != nil && !errors.Is(err, proxy.ErrUnhealthy) {
			// The new container may have taken the traffic before it
			// failed (a crash during the drain): give it back to the old
			// one before the new one stops. A no-op if it never moved.
			r.switchBack(context.WithoutCancel(ctx), host, route, spec.Proxy.AppPort, nw, old.ID)
		}
		_ = r.stopContainer(context.WithoutCancel(ctx), host, spec, id)
		log.Error("new container failed; old one keeps serving", "container", spec.Name, "err", err)
		if errors.Is(err, proxy.ErrUnhealthy) || errors.Is(err, ErrUnhealthy) {
			return fmt.Errorf("%w: %s on %s: %w", ErrUnhealthy, spec.Name, host, err)
		}
		return fmt.Errorf("%w: switch %s on %s: %w", ErrHost, spec.Name, host, err)
	}
	sr.Switched = a.now()
	sw := switched{host: host, spec: spec, old: old, new: nw}
	if proxied {
		sw.route = &route
	}
	r.mu.Lock()
	r.switched = append(r.switched, sw)
	r.mu.Unlock()

	// Stop the old container only now that traffic left it, and the one
	// that held the new name if it was not the old one (a boot interrupted
	// by a crash may have started it after it was observed).
	t2 := a.now()
	if old != nil {
		if err := r.stopContainer(ctx, host, spec, old.ID); err != nil {
			return fmt.Errorf("%w: stop %s: %w", ErrHost, old.Name, err)
		}
	}
	if c.clash != "" && (old == nil || c.clash != old.ID) {
		if err := r.stopContainer(ctx, host, spec, c.clash); err != nil {
			return fmt.Errorf("%w: stop replaced %s: %w", ErrHost, spec.Name, err)
		}
	}
	phase("stop", t2)
	log.Info("deployed", "container", spec.Name, "from", s.From, "took", a.now().Sub(sr.Start).Round(time.Millisecond))
	return nil
}

// switchBack routes route on host to the container oldID again.
func (r *applyRun) switchBack(ctx context.Context, host string, route proxy.Route, port int, from *liveContainer, oldID string) {
	old, err := r.inspectContainer(ctx, host, oldID)
	if err == nil {
		err = r.a.Proxy.Switch(ctx, host, route, from.target(port), old.target(port))
	}
	if err != nil {
		r.log.Error("switch back to the old container", "host", host, "route", route.Name(), "container", oldID, "err", err)
	}
}

func (r *applyRun) stopArgv(spec *kamal.Container, id string) []string {
	if spec.StopTimeout != nil {
		return []string{"docker", "stop", "-t", strconv.Itoa(*spec.StopTimeout), id}
	}
	return []string{"docker", "stop", id}
}

// crashed reports a container that exited or keeps restarting.
func (st containerState) crashed() error {
	switch {
	case st.Status == "exited" || st.Status == "dead":
		return fmt.Errorf("%w: container %s with code %d", ErrUnhealthy, st.Status, st.ExitCode)
	case st.Status == "restarting" || st.RestartCount > 0:
		return fmt.Errorf("%w: container restarting (%d restarts)", ErrUnhealthy, st.RestartCount)
	case st.Health == "unhealthy":
		return fmt.Errorf("%w: docker health check unhealthy", ErrUnhealthy)
	}
	return nil
}

// watchWhile runs f (the proxy switch, which health-checks the container)
// while polling the container; a container that exits or restarts fails
// the deploy at once instead of after deploy_timeout.
func (r *applyRun) watchWhile(ctx context.Context, host, id string, f func(context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- f(fctx) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil && context.Cause(fctx) != nil && !errors.Is(context.Cause(fctx), context.Canceled) {
				return context.Cause(fctx)
			}
			return err
		case <-tick.C:
			st, err := r.state(ctx, host, id)
			if err != nil {
				continue
			}
			if cerr := st.crashed(); cerr != nil {
				cancel(cerr)
				<-done
				return cerr
			}
		}
	}
}

// waitReady judges a non-proxied container by Docker, as Kamal does:
// healthy passes; running passes once readiness_delay has passed since it
// started and a re-check still finds it running; exited or restarting
// fails at once; otherwise up to deploy_timeout. started is when the start
// returned (the container was running then).
func (r *applyRun) waitReady(ctx context.Context, host, id string, started time.Time) error {
	c := r.a.Config
	delay := time.Duration(c.ReadinessDelay) * time.Second
	deadline := started.Add(time.Duration(c.DeployTimeout) * time.Second)
	for {
		st, err := r.state(ctx, host, id)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrHost, err)
		}
		if err := st.crashed(); err != nil {
			return err
		}
		now := r.a.now()
		switch {
		case st.Health == "healthy":
			return nil
		case st.Health == "" && st.Status == "running" && now.Sub(started) >= delay:
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("%w: not ready within deploy_timeout %ds (state %s, health %q)", ErrUnhealthy, c.DeployTimeout, st.Status, st.Health)
		}
		// Poll often enough to catch a crash early, and re-check right
		// when readiness_delay is over.
		wait := 250 * time.Millisecond
		if left := started.Add(delay).Sub(now); st.Health == "" && left > 0 && left < wait {
			wait = left
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// containerLogs returns the last lines a failed container printed.
func (r *applyRun) containerLogs(host, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := r.a.SSH.Run(ctx, host, []string{"sh", "-c", `docker logs --tail 30 --timestamps "$1" 2>&1`, "sh", id}, nil)
	if err != nil {
		return ""
	}
	if r.a.Redact != nil {
		return r.a.Redact(string(out))
	}
	return string(out)
}

// rollback switches every host that took the new version back to the
// container it ran before, newest switch first.
func (r *applyRun) rollback(ctx context.Context) {
	a := r.a
	r.mu.Lock()
	sw := append([]switched(nil), r.switched...)
	r.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	for i := len(sw) - 1; i >= 0; i-- {
		s := sw[i]
		if s.old == nil {
			continue // nothing ran before; leave the new one serving
		}
		log := r.log.With("host", s.host, "role", s.spec.Role)
		old, err := r.startContainer(ctx, s.host, s.old.ID)
		if err != nil {
			log.Error("rollback: start old container", "err", err)
			r.fail(s.host, fmt.Errorf("rollback failed: start %s: %w", s.old.Name, err))
			continue
		}
		if s.route != nil {
			err = a.Proxy.Switch(ctx, s.host, *s.route, s.new.target(s.spec.Proxy.AppPort), old.target(s.spec.Proxy.AppPort))
		}
		if err == nil {
			err = r.stopContainer(ctx, s.host, s.spec, s.new.ID)
		}
		if err != nil {
			log.Error("rollback", "err", err)
			r.fail(s.host, fmt.Errorf("rollback failed: %w", err))
			continue
		}
		r.fail(s.host, fmt.Errorf("%w (%s) after another host failed", ErrRolledBack, s.old.Name))
		r.mu.Lock()
		r.res.RolledBack = append(r.res.RolledBack, s.host)
		r.mu.Unlock()
		r.audit(ctx, s.host, s.spec.Role, "Rolled back to "+s.old.Name+" after a failed deploy of "+a.Config.Version.Name())
	}
}

// cleanup stops stale and unmanaged containers and prunes old ones.
func (r *applyRun) cleanup(ctx context.Context, hp *HostPlan) error {
	a := r.a
	for _, s := range hp.Steps {
		var err error
		sr := &StepResult{Step: s, Start: a.now()}
		switch s.Kind {
		case StepStopStale, StepStopUnmanaged:
			_, err = a.SSH.Run(ctx, hp.Host, []string{"docker", "stop", s.Container}, nil)
		case StepPrune:
			for _, c := range s.Remove {
				if err = r.removeContainer(ctx, hp.Host, c); err != nil {
					break
				}
			}
		default:
			continue
		}
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrHost, s, err)
		}
		if s.Kind == StepPrune {
			r.audit(ctx, hp.Host, "", "Pruned containers")
		}
	}
	return nil
}

// onNetwork reports whether a container is attached to network (so it
// exists).
func (o *Observed) onNetwork(network string) bool {
	for _, c := range o.Containers {
		for _, n := range c.Networks {
			if n == network {
				return true
			}
		}
	}
	return false
}

func (o *Observed) byName(name string) *Container {
	for i := range o.Containers {
		if o.Containers[i].Name == name {
			return &o.Containers[i]
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
