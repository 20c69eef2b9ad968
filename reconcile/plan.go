package reconcile

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// StepKind names what a step does.
type StepKind string

// The steps a plan can hold, in the order Apply runs them on a host.
const (
	StepPull            StepKind = "pull" // recorded by apply only, never planned
	StepConnect         StepKind = "connect-network"
	StepBootProxy       StepKind = "boot-proxy"
	StepBootAccessory   StepKind = "boot-accessory"
	StepRebootAccessory StepKind = "reboot-accessory"
	StepDeploy          StepKind = "deploy"
	StepReassert        StepKind = "reassert-route"
	StepStopStale       StepKind = "stop-stale"
	StepStopUnmanaged   StepKind = "stop-unmanaged"
	StepPrune           StepKind = "prune"
)

// Step is one change to a host, with the reason it is needed.
type Step struct {
	Kind StepKind `json:"kind"`
	Host string   `json:"host"`
	// Role is the role (or accessory name) the step concerns.
	Role string `json:"role,omitempty"`
	// Container is the container the step creates or acts on.
	Container string `json:"container,omitempty"`
	// From is the container a deploy replaces ("" when none runs).
	From string `json:"from,omitempty"`
	// FromVersion and ToVersion are the versions of From and Container.
	FromVersion string `json:"from_version,omitempty"`
	ToVersion   string `json:"to_version,omitempty"`
	// Remove lists the containers a prune removes, newest first.
	Remove []string `json:"remove,omitempty"`
	Reason string   `json:"reason"`

	spec *kamal.Container // the desired container (deploy, accessory steps)
}

// String is the step as `capstan plan` prints it.
func (s Step) String() string {
	switch s.Kind {
	case StepDeploy:
		if s.FromVersion != "" && s.FromVersion != s.ToVersion {
			return fmt.Sprintf("deploy %s %s→%s: %s", s.Role, s.FromVersion, s.ToVersion, s.Reason)
		}
		if s.Reason == "missing" || s.FromVersion == "" {
			return fmt.Sprintf("deploy %s %s: %s", s.Role, s.ToVersion, s.Reason)
		}
		return fmt.Sprintf("reboot %s %s: %s", s.Role, s.ToVersion, s.Reason)
	case StepBootProxy:
		return "boot proxy: " + s.Reason
	case StepConnect:
		return fmt.Sprintf("connect %s to the network: %s", s.Container, s.Reason)
	case StepReassert:
		return fmt.Sprintf("route %s to %s: %s", s.Role, s.Container, s.Reason)
	case StepBootAccessory:
		return fmt.Sprintf("boot accessory %s: %s", s.Role, s.Reason)
	case StepRebootAccessory:
		return fmt.Sprintf("reboot accessory %s: %s", s.Role, s.Reason)
	case StepStopStale:
		return fmt.Sprintf("stop stale %s: %s", s.Container, s.Reason)
	case StepStopUnmanaged:
		return fmt.Sprintf("stop unmanaged %s: %s", s.Container, s.Reason)
	case StepPrune:
		return fmt.Sprintf("prune %d containers beyond retain_containers", len(s.Remove))
	case StepJob:
		return fmt.Sprintf("run %s (%s) in %s", s.Reason, s.Role, s.Container)
	}
	return string(s.Kind) + ": " + s.Reason
}

// DriftKind classifies how a host differs from git.
type DriftKind string

// Drift kinds.
const (
	DriftMissing          DriftKind = "container-missing"
	DriftWrongVersion     DriftKind = "wrong-version"
	DriftSpecChanged      DriftKind = "spec-changed"
	DriftStopped          DriftKind = "stopped"
	DriftRestarting       DriftKind = "restarting"
	DriftUnhealthy        DriftKind = "unhealthy"
	DriftProxyDown        DriftKind = "proxy-down"
	DriftRouteWrong       DriftKind = "route-wrong"
	DriftUnmanaged        DriftKind = "unmanaged-container"
	DriftAccessoryMissing DriftKind = "accessory-missing"
	DriftAccessoryChanged DriftKind = "accessory-changed"
	DriftStale            DriftKind = "stale-container"
	DriftStaleLock        DriftKind = "stale-lock"
	// DriftDetached: a running container of the app (or its proxy) is
	// not on the app's network (removed by hand, or the network was).
	DriftDetached DriftKind = "network-detached"
	// DriftUnreachable: the host could not be observed (no route, no
	// answer in time, refused SSH, a changed host key).
	DriftUnreachable DriftKind = "unreachable"
)

// Drift is one way a host differs from the desired state.
type Drift struct {
	Host   string    `json:"host"`
	Kind   DriftKind `json:"kind"`
	Role   string    `json:"role,omitempty"`
	Detail string    `json:"detail"`
}

func (d Drift) String() string { return fmt.Sprintf("%s: %s: %s", d.Host, d.Kind, d.Detail) }

// HostPlan is the plan for one host.
type HostPlan struct {
	Host  string  `json:"host"`
	Steps []Step  `json:"steps"`
	Drift []Drift `json:"drift"`
	// Error is set when the host could not be observed; it has no steps.
	Error string `json:"error,omitempty"`

	observed *Observed
	desired  *kamal.HostPlan
}

// Plan is the plan for one app on all its hosts. Apply executes exactly
// this value.
type Plan struct {
	Service     string      `json:"service"`
	Destination string      `json:"destination,omitempty"`
	Version     string      `json:"version"`
	Image       string      `json:"image"`
	Hosts       []*HostPlan `json:"hosts"`
	// Jobs are the release jobs apply runs with the deploy (none when the
	// plan deploys nothing): pre_deploy before any container of the new
	// version boots, post_deploy after every host switched.
	Jobs      []PlannedJob `json:"jobs,omitempty"`
	CreatedAt time.Time    `json:"created_at"`

	app *App
}

// Empty reports whether the plan changes nothing on any reachable host.
func (p *Plan) Empty() bool {
	for _, h := range p.Hosts {
		if len(h.Steps) > 0 {
			return false
		}
	}
	return true
}

// Drift returns every drift item of the plan.
func (p *Plan) Drift() []Drift {
	var out []Drift
	for _, h := range p.Hosts {
		out = append(out, h.Drift...)
	}
	return out
}

// Unreachable returns the hosts that could not be observed.
func (p *Plan) Unreachable() []string {
	var out []string
	for _, h := range p.Hosts {
		if h.Error != "" {
			out = append(out, h.Host)
		}
	}
	return out
}

// only returns a copy of p holding the hosts keep accepts.
func (p *Plan) only(keep func(*HostPlan) bool) *Plan {
	q := *p
	q.Hosts = nil
	for _, h := range p.Hosts {
		if keep(h) {
			q.Hosts = append(q.Hosts, h)
		}
	}
	return &q
}

// WriteText prints the plan for people.
func (p *Plan) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s version %s (%s)\n", p.name(), p.Version, p.Image)
	for _, h := range p.Hosts {
		switch {
		case h.Error != "":
			fmt.Fprintf(w, "  %s: cannot observe: %s\n", h.Host, h.Error)
			continue
		case len(h.Steps) == 0:
			fmt.Fprintf(w, "  %s: up to date\n", h.Host)
		default:
			fmt.Fprintf(w, "  %s:\n", h.Host)
			for i, s := range h.Steps {
				fmt.Fprintf(w, "    %d. %s\n", i+1, s)
			}
		}
		for _, d := range h.Drift {
			fmt.Fprintf(w, "    drift %s: %s\n", d.Kind, d.Detail)
		}
	}
	for _, j := range p.Jobs {
		fmt.Fprintf(w, "  run %s\n", j)
	}
}

// WriteJSON prints the plan for machines.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

func (p *Plan) name() string {
	if p.Destination != "" {
		return p.Service + " (" + p.Destination + ")"
	}
	return p.Service
}

// planHost compares what host runs with what it should run.
func (a *App) planHost(want *kamal.HostPlan, o *Observed) *HostPlan {
	hp := &HostPlan{Host: want.Host, observed: o, desired: want, Steps: []Step{}, Drift: []Drift{}}
	step := func(s Step) { s.Host = want.Host; hp.Steps = append(hp.Steps, s) }
	drift := func(kind DriftKind, role, format string, args ...any) {
		hp.Drift = append(hp.Drift, Drift{Host: want.Host, Kind: kind, Role: role, Detail: fmt.Sprintf(format, args...)})
	}
	byName := map[string]*Container{}
	for i := range o.Containers {
		byName[o.Containers[i].Name] = &o.Containers[i]
	}

	// The proxy, when a routed role lives here.
	if a.routed(want) {
		name := a.ProxyContainer
		pc := byName[name]
		switch {
		case pc == nil:
			step(Step{Kind: StepBootProxy, Container: name, Reason: "not running (missing)"})
			drift(DriftProxyDown, "", "proxy container %s is missing", name)
		case !pc.Running():
			step(Step{Kind: StepBootProxy, Container: name, Reason: "not running (" + pc.State + ")"})
			drift(DriftProxyDown, "", "proxy container %s is %s", name, pc.State)
		case !pc.on(want.Network):
			step(Step{Kind: StepConnect, Container: name, Reason: "the proxy is not on " + want.Network})
			drift(DriftDetached, "", "proxy container %s is not on the %s network", name, want.Network)
		}
	}

	// Accessories: booted when missing; rebooted on change only when the
	// app says so (they hold data).
	for _, acc := range want.Accessories {
		c := byName[acc.Name]
		switch {
		case c == nil:
			step(Step{Kind: StepBootAccessory, Role: acc.Role, Container: acc.Name, Reason: "missing", spec: acc})
			drift(DriftAccessoryMissing, acc.Role, "accessory %s is missing", acc.Name)
		case !c.Running():
			step(Step{Kind: StepBootAccessory, Role: acc.Role, Container: acc.Name, Reason: "not running (" + c.State + ")", spec: acc})
			drift(DriftStopped, acc.Role, "accessory %s is %s", acc.Name, c.State)
		case comparable(c.Fingerprint, acc.Fingerprint) && c.Fingerprint != acc.Fingerprint:
			drift(DriftAccessoryChanged, acc.Role, "accessory %s runs an older spec", acc.Name)
			if a.RebootAccessories {
				step(Step{Kind: StepRebootAccessory, Role: acc.Role, Container: acc.Name, Reason: "spec changed", spec: acc})
			}
		}
	}

	// App roles.
	managed := map[string]bool{} // container names this plan accounts for
	for _, spec := range want.Apps {
		prefix := a.rolePrefix(spec)
		cur, cands := a.roleContainers(spec, o)
		for _, c := range cands {
			managed[c.Name] = true
		}
		from, fromVersion := "", ""
		if cur != nil {
			from, fromVersion = cur.Name, strings.TrimPrefix(cur.Name, prefix)
		}
		deploy := func(reason string) {
			step(Step{Kind: StepDeploy, Role: spec.Role, Container: spec.Name, From: from,
				FromVersion: fromVersion, ToVersion: a.Config.Version.Name(), Reason: reason, spec: spec})
		}
		switch {
		case cur == nil:
			if c := byName[spec.Name]; c != nil {
				deploy("container " + c.State)
				drift(DriftStopped, spec.Role, "%s is %s", c.Name, c.State)
			} else {
				deploy("missing")
				drift(DriftMissing, spec.Role, "no %s container runs (want %s)", spec.Role, spec.Name)
			}
		case cur.Name != spec.Name:
			deploy("version changed")
			drift(DriftWrongVersion, spec.Role, "%s runs, want %s", cur.Name, spec.Name)
		case !comparable(cur.Fingerprint, spec.Fingerprint) && !a.adopted(cur, spec, o):
			deploy("spec changed (container deployed without this capstan's key differs from the config)")
			drift(DriftSpecChanged, spec.Role, "%s differs from the config", cur.Name)
		case comparable(cur.Fingerprint, spec.Fingerprint) && cur.Fingerprint != spec.Fingerprint:
			deploy("spec changed (image, env, options, labels, cmd or volumes)")
			drift(DriftSpecChanged, spec.Role, "%s runs an older spec of the same version", cur.Name)
		case cur.State == "restarting":
			deploy("container restarting")
			drift(DriftRestarting, spec.Role, "%s keeps restarting", cur.Name)
		case cur.Health() == "unhealthy":
			drift(DriftUnhealthy, spec.Role, "%s is unhealthy", cur.Name)
		case !cur.on(want.Network):
			step(Step{Kind: StepConnect, Role: spec.Role, Container: cur.Name, Reason: "not on " + want.Network})
			drift(DriftDetached, spec.Role, "%s is not on the %s network", cur.Name, want.Network)
			if spec.Proxy != nil {
				step(Step{Kind: StepReassert, Role: spec.Role, Container: cur.Name, Reason: "reconnected to " + want.Network, spec: spec})
			}
		default:
			// The container is right; is the proxy sending it the traffic?
			if spec.Proxy != nil && o.Routes != nil {
				if why := routeProblem(o.Routes, spec.Proxy.Service, cur); why != "" {
					step(Step{Kind: StepReassert, Role: spec.Role, Container: cur.Name, Reason: why, spec: spec})
					drift(DriftRouteWrong, spec.Role, "%s", why)
				}
			}
		}
		// Anything else of this role still running is stale.
		for _, c := range cands {
			if c != cur && c.Running() {
				step(Step{Kind: StepStopStale, Role: spec.Role, Container: c.Name, Reason: "not the current version"})
				drift(DriftStale, spec.Role, "%s still runs beside %s", c.Name, spec.Name)
			}
		}
	}

	// Running containers that carry the service label but belong to no role
	// of this host: started by hand, or left by a removed role.
	for i := range o.Containers {
		c := &o.Containers[i]
		if c.Service != a.Config.Service || managed[c.Name] || !c.Running() {
			continue
		}
		if c.Destination != a.Config.Destination && c.HasDest && c.Role != "" {
			continue // another destination of the same service
		}
		drift(DriftUnmanaged, c.Role, "%s (%s) carries service=%s but is not part of the config", c.Name, c.Image, a.Config.Service)
		if a.StopUnmanaged {
			step(Step{Kind: StepStopUnmanaged, Container: c.Name, Reason: "not part of the config"})
		}
	}

	// Prune stopped containers of this service and destination beyond
	// retain_containers (Kamal scopes by service only; capstan also by
	// destination so staging never evicts production's rollbacks).
	var stopped []string
	for i := range o.Containers {
		c := &o.Containers[i]
		if c.Service == a.Config.Service && c.Destination == a.Config.Destination && c.Role != "" &&
			(c.State == "exited" || c.State == "created" || c.State == "dead") {
			stopped = append(stopped, c.Name)
		}
	}
	if len(stopped) > a.Config.RetainContainers {
		step(Step{Kind: StepPrune, Remove: stopped[a.Config.RetainContainers:], Reason: "beyond retain_containers"})
	}

	// A lock older than StaleLockAfter on the lock host.
	if want.Host == a.LockHost() && o.Lock != "" {
		if at, ok := lockTime(o.Lock); ok && time.Since(at) > a.staleLockAfter() {
			drift(DriftStaleLock, "", "deploy lock held since %s: %s", at.UTC().Format(time.RFC3339), firstLine(o.Lock))
		}
	}
	sortSteps(hp.Steps)
	return hp
}

// rolePrefix is the name of spec's containers without the version
// ("testapp-web-"): every version of the role starts with it.
func (a *App) rolePrefix(spec *kamal.Container) string {
	return strings.TrimSuffix(spec.Name, "-"+a.Config.Version.Name()) + "-"
}

// roleContainers returns the containers of spec's role on o (this service
// and destination, any version, newest first) and, among them, the
// current one: the one with the desired name if it runs, else the newest
// running one (Kamal's current_running_version); nil when none runs. A
// restarting container counts as running.
func (a *App) roleContainers(spec *kamal.Container, o *Observed) (cur *Container, cands []*Container) {
	prefix := a.rolePrefix(spec)
	for i := range o.Containers {
		c := &o.Containers[i]
		if c.Service == a.Config.Service && c.Role == spec.Role && c.Destination == a.Config.Destination && strings.HasPrefix(c.Name, prefix) {
			cands = append(cands, c)
		}
	}
	up := func(c *Container) bool { return c.Running() || c.State == "restarting" }
	for _, c := range cands {
		if c.Name == spec.Name && up(c) {
			return c, cands
		}
	}
	for _, c := range cands {
		if up(c) {
			return c, cands
		}
	}
	return nil, cands
}

// routeProblem says why the proxy's route name does not send traffic to c
// alone ("" when it does).
func routeProblem(routes map[string]proxy.LiveRoute, name string, c *Container) string {
	lr, ok := routes[name]
	if !ok {
		return "the proxy has no route " + name
	}
	var others []string
	found := false
	for _, t := range lr.Targets {
		if t.Container != "" && (strings.HasPrefix(c.ID, t.Container) || t.Container == c.Name) {
			if moved := movedFrom(t, c); moved != "" {
				return "route " + name + " sends traffic to " + c.Name + " at " + moved + ", but it now has " + c.IP
			}
			found = true
		} else {
			others = append(others, t.String())
		}
	}
	switch {
	case !found && len(others) == 0:
		return "route " + name + " has no live target"
	case !found:
		return "route " + name + " sends traffic to " + strings.Join(others, ", ") + ", not " + c.Name
	case len(others) > 0:
		return "route " + name + " also sends traffic to " + strings.Join(others, ", ")
	}
	return ""
}

// movedFrom returns the address a route's target t has for c when c is
// known to have another one on the kamal network: after a restart of
// dockerd (a reboot) a container can come back at a new address while a
// proxy that routes by address (HAProxy) still sends traffic to the old
// one. "" when the addresses agree or either is unknown (kamal-proxy
// routes by name).
func movedFrom(t proxy.Target, c *Container) string {
	if !t.IP.IsValid() || c.IP == "" || t.IP.String() == c.IP {
		return ""
	}
	return t.IP.String()
}

var stepOrder = map[StepKind]int{StepConnect: -1, StepBootProxy: 0, StepBootAccessory: 1, StepRebootAccessory: 2, StepDeploy: 3, StepReassert: 4, StepStopStale: 5, StepStopUnmanaged: 6, StepPrune: 7}

func sortSteps(s []Step) {
	sort.SliceStable(s, func(i, j int) bool { return stepOrder[s[i].Kind] < stepOrder[s[j].Kind] })
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// lockTime reads "Locked by: NAME at 2026-11-26T05:00:00Z" from Kamal's
// lock details.
func lockTime(details string) (time.Time, bool) {
	line := firstLine(details)
	i := strings.LastIndex(line, " at ")
	if i < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(line[i+4:]))
	return t, err == nil
}
