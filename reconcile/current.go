package reconcile

import (
	"strings"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// roleContainers returns the observed containers of role (service, role
// and destination labels of cfg, name starting with prefix "S-R[-D]-"),
// newest first.
func (o *Observed) roleContainers(cfg *kamal.Config, role, prefix string) []*Container {
	var cands []*Container
	for i := range o.Containers {
		c := &o.Containers[i]
		if c.Service == cfg.Service && c.Role == role && c.Destination == cfg.Destination && strings.HasPrefix(c.Name, prefix) {
			cands = append(cands, c)
		}
	}
	return cands
}

// current picks the current container among a role's containers (newest
// first): want (the desired one, may be nil) if it runs or is restarting,
// else the newest that does (Kamal's current_running_version); nil when
// none does.
func current(cands []*Container, want *Container) *Container {
	up := func(c *Container) bool { return c.Running() || c.State == "restarting" }
	if want != nil && contains(cands, want) && up(want) {
		return want
	}
	for _, c := range cands {
		if up(c) {
			return c
		}
	}
	return nil
}

// Current returns the current container of role on the observed host, as
// a plan sees it (see current), or nil when none runs.
func (o *Observed) Current(cfg *kamal.Config, role string) *Container {
	r := cfg.Role(role)
	if r == nil {
		return nil
	}
	cands := o.roleContainers(cfg, role, cfg.Prefix(r)+"-")
	return current(cands, o.byName(cfg.ContainerName(r)))
}
