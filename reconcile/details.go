package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Kinds of the containers Details lists.
const (
	KindApp       = "app"
	KindAccessory = "accessory"
	KindProxy     = "proxy"
)

// ContainerDetails is one container of the app on a host.
type ContainerDetails struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Kind is KindApp, KindAccessory or KindProxy.
	Kind string `json:"kind"`
	// Role is the app role or the accessory's name ("" for the proxy).
	Role string `json:"role,omitempty"`
	// Version is an app container's version (its name's suffix), or the
	// image tag of the others.
	Version string `json:"version"`
	State   string `json:"state"`
	// Health is "healthy", "unhealthy", "starting" or "" (no check).
	Health string `json:"health,omitempty"`
	// Current marks the container of its role the app runs now (the one
	// `capstan logs` reads).
	Current bool `json:"current,omitempty"`
	// Started is when the container last started; zero when unknown.
	Started time.Time `json:"started,omitzero"`
	// Uptime is how long a running container has run ("" otherwise).
	Uptime string `json:"uptime,omitempty"`
	Image  string `json:"image"`
	// Digests are the image's RepoDigests (repository@sha256:…).
	Digests []string `json:"digests,omitempty"`
	// Route is the proxy route that sends this container traffic now.
	Route string `json:"route,omitempty"`
}

// HostDetails is what Details found on one host.
type HostDetails struct {
	Host string `json:"host"`
	// Error is set when the host could not be observed or inspected.
	Error      string             `json:"error,omitempty"`
	Containers []ContainerDetails `json:"containers"`
}

// Details observes every host as Plan does (containers and the proxy's
// routes), then inspects the containers of the app it found with one more
// command per host (start times and image digests). It lists, per host,
// the proxy, the accessories, and every running container of each role
// plus the one the configuration wants, whatever its state. A host that
// cannot be observed has Error set; the error is ctx's.
func (a *App) Details(ctx context.Context) ([]HostDetails, error) {
	p, err := a.Plan(ctx)
	if p == nil {
		return nil, err
	}
	out := make([]HostDetails, len(p.Hosts))
	hosts := make([]string, len(p.Hosts))
	for i, hp := range p.Hosts {
		hosts[i] = hp.Host
	}
	a.forEachHost(ctx, hosts, func(ctx context.Context, i int, host string) {
		hp := p.Hosts[i]
		out[i] = HostDetails{Host: host, Error: hp.Error, Containers: []ContainerDetails{}}
		if hp.Error != "" || hp.observed == nil {
			return
		}
		cs, ids := a.hostContainers(hp)
		if len(ids) > 0 {
			b, err := a.SSH.Run(ctx, host, inspectDetailsArgv(ids), nil)
			if err != nil {
				out[i].Error = fmt.Sprintf("inspect: %v", err)
			}
			addInspected(cs, b, a.now())
		}
		out[i].Containers = cs
	})
	return out, err
}

// hostContainers picks the containers Details lists on hp's host, and
// their IDs.
func (a *App) hostContainers(hp *HostPlan) ([]ContainerDetails, []string) {
	o, want := hp.observed, hp.desired
	var out []ContainerDetails
	var ids []string
	add := func(c *Container, kind, role, version string, current bool) {
		out = append(out, ContainerDetails{ID: c.ID, Name: c.Name, Kind: kind, Role: role, Version: version, State: c.State,
			Health: c.Health(), Current: current, Image: c.Image, Route: routeOf(o.Routes, c)})
		ids = append(ids, c.ID)
	}
	if pc := o.byName(a.ProxyContainer); pc != nil && a.ProxyContainer != "" {
		add(pc, KindProxy, "", imageTag(pc.Image), pc.Running())
	}
	for _, acc := range want.Accessories {
		if c := o.byName(acc.Name); c != nil {
			add(c, KindAccessory, acc.Role, imageTag(c.Image), c.Running())
		}
	}
	for _, spec := range want.Apps {
		cur, cands := a.roleContainers(spec, o)
		prefix := a.rolePrefix(spec)
		for _, c := range cands {
			if c == cur || c.Running() || c.Name == spec.Name {
				add(c, KindApp, spec.Role, strings.TrimPrefix(c.Name, prefix), c == cur)
			}
		}
	}
	return out, ids
}

// routeOf names the route whose targets include c ("" for none).
func routeOf(routes map[string]proxy.LiveRoute, c *Container) string {
	for name, r := range routes {
		for _, t := range r.Targets {
			if t.Container != "" && (strings.HasPrefix(c.ID, t.Container) || t.Container == c.Name) {
				return name
			}
		}
	}
	return ""
}

// imageTag is the tag (or digest) of an image reference.
func imageTag(ref string) string {
	_, tag := splitRef(ref)
	return tag
}

const detailsMarker = "--capstan-images--"

// inspectDetailsArgv inspects containers (ID, image ID, start time), then
// their images (ID, RepoDigests), in one round trip. A container removed
// meanwhile is left out.
func inspectDetailsArgv(ids []string) []string {
	script := `out=$(docker inspect --type container --format '{{.Id}} {{.Image}} {{.State.StartedAt}}' "$@" 2>/dev/null)
printf '%s\n' "$out" "$0"
set -- $(printf '%s\n' "$out" | cut -d ' ' -f 2 | sort -u)
[ $# -gt 0 ] && docker image inspect --format '{{.Id}} {{json .RepoDigests}}' "$@" 2>/dev/null
exit 0`
	return append([]string{"sh", "-c", script, detailsMarker}, ids...)
}

// addInspected fills the start times, uptimes and digests of cs from
// inspectDetailsArgv's output b.
func addInspected(cs []ContainerDetails, b []byte, now time.Time) {
	conts, imgs, _ := bytes.Cut(b, []byte(detailsMarker+"\n"))
	type ci struct {
		image   string
		started time.Time
	}
	byID := map[string]ci{}
	for _, line := range strings.Split(string(conts), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 {
			t, _ := time.Parse(time.RFC3339Nano, f[2])
			byID[f[0]] = ci{image: f[1], started: t}
		}
	}
	digests := map[string][]string{}
	for _, line := range strings.Split(string(imgs), "\n") {
		id, js, ok := strings.Cut(line, " ")
		var ds []string
		if ok && json.Unmarshal([]byte(js), &ds) == nil {
			digests[id] = ds
		}
	}
	for i := range cs {
		c := &cs[i]
		in, ok := byID[c.ID]
		if !ok {
			continue
		}
		if in.started.Year() > 1 {
			c.Started = in.started
			if c.State == "running" {
				c.Uptime = now.Sub(in.started).Round(time.Second).String()
			}
		}
		c.Digests = digests[in.image]
	}
}
