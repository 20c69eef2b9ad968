package simfleet

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// kamalProxy runs `kamal-proxy args...` inside the kamal-proxy container:
// deploy, list and remove.
func (x *cmdCtx) kamalProxy(args []string) int {
	if len(args) == 0 {
		return x.unknown()
	}
	x.count("kamal-proxy " + args[0])
	switch args[0] {
	case "deploy":
		return x.proxyDeploy(args[1:])
	case "list":
		x.proxyList()
		return 0
	case "remove":
		if len(args) != 2 {
			return x.unknown()
		}
		x.h.mu.Lock()
		_, ok := x.h.state.routes[args[1]]
		delete(x.h.state.routes, args[1])
		x.h.mu.Unlock()
		if !ok {
			return x.fail(1, "Error: service not found")
		}
		return 0
	}
	return x.unknown()
}

// proxyDeploy health-checks the target (Latency.Switch) and points the
// route at it; a target that is not a running container fails as
// kamal-proxy's health check would.
func (x *cmdCtx) proxyDeploy(args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return x.unknown()
	}
	r := &Route{Name: args[0]}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch k {
		case "target":
			r.Target = v
		case "host":
			r.Hosts = append(r.Hosts, v)
		case "path-prefix":
			r.PathPrefixes = append(r.PathPrefixes, v)
		case "tls":
			r.TLS = v == "" || v == "true"
		}
	}
	if r.Target == "" {
		return x.fail(1, "Error: a target is required")
	}
	x.h.wait(x.h.latency().Switch)
	ref, _, _ := strings.Cut(r.Target, ":")
	h := x.h
	h.mu.Lock()
	c := h.state.container(ref)
	ok := c != nil && c.State == "running" && slices.Contains(c.Networks, "kamal")
	if ok {
		h.state.routes[r.Name] = r
	}
	h.mu.Unlock()
	if !ok {
		return x.fail(1, "Error: target failed to become healthy within configured timeout")
	}
	h.f.stats.switched(Switch{Host: h.addr, Route: r.Name, Target: r.Target, At: time.Now()})
	return 0
}

// proxyList prints kamal-proxy's route table, columns padded to their
// widest cell.
func (x *cmdCtx) proxyList() {
	h := x.h
	h.mu.Lock()
	rows := [][]string{{"Service", "Host", "Path", "Target", "State", "TLS"}}
	for _, name := range sortedKeys(h.state.routes) {
		r := h.state.routes[name]
		hosts, paths, tls := "*", "/", "no"
		if len(r.Hosts) > 0 {
			hosts = strings.Join(r.Hosts, ",")
		}
		if len(r.PathPrefixes) > 0 {
			paths = strings.Join(r.PathPrefixes, ",")
		}
		if r.TLS {
			tls = "yes"
		}
		rows = append(rows, []string{r.Name, hosts, paths, r.Target, "running", tls})
	}
	h.mu.Unlock()
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			fmt.Fprintf(&b, "%-*s  ", widths[i], cell)
		}
		b.WriteString("\n")
	}
	io.WriteString(x.out, b.String())
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
