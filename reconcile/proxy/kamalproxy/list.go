package kamalproxy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// listColumns are the headers of `kamal-proxy list`; Path is missing before
// path prefixes existed and is optional.
var listColumns = []string{"Service", "Host", "Path", "Target", "State", "TLS"}

// ParseList parses the table `kamal-proxy list` prints: ANSI colour escapes
// (always present) are stripped and cells are cut at the header's column
// positions, so an empty cell cannot shift the others. Host "*" means the
// catch-all route (no hosts). The result is sorted by name. Errors wrap
// proxy.ErrParse.
func ParseList(out []byte) ([]proxy.LiveRoute, error) {
	text := ansiRE.ReplaceAllString(string(out), "")
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	// Find the header.
	h := -1
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			h = i
			break
		}
	}
	if h < 0 {
		return nil, fmt.Errorf("%w: kamal-proxy list printed nothing", proxy.ErrParse)
	}
	header := lines[h]
	type col struct {
		name  string
		start int
	}
	var cols []col
	for _, f := range strings.Fields(header) {
		if !slices.Contains(listColumns, f) {
			return nil, fmt.Errorf("%w: kamal-proxy list header %q: unknown column %q", proxy.ErrParse, strings.TrimSpace(header), f)
		}
		from := 0
		if len(cols) > 0 {
			from = cols[len(cols)-1].start + 1
		}
		i := strings.Index(header[from:], f)
		cols = append(cols, col{f, from + i})
	}
	for _, need := range []string{"Service", "Target"} {
		if !slices.ContainsFunc(cols, func(c col) bool { return c.name == need }) {
			return nil, fmt.Errorf("%w: kamal-proxy list header %q has no %s column", proxy.ErrParse, strings.TrimSpace(header), need)
		}
	}
	var routes []proxy.LiveRoute
	for n, l := range lines[h+1:] {
		if strings.TrimSpace(l) == "" {
			continue
		}
		cell := map[string]string{}
		for i, c := range cols {
			end := len(l)
			if i+1 < len(cols) && cols[i+1].start < end {
				end = cols[i+1].start
			}
			if c.start < end {
				cell[c.name] = strings.TrimSpace(l[c.start:end])
			}
		}
		r := proxy.LiveRoute{Name: cell["Service"], State: cell["State"], TLS: cell["TLS"] == "yes"}
		if !proxy.ValidName(r.Name) {
			return nil, fmt.Errorf("%w: kamal-proxy list line %d: service %q", proxy.ErrParse, h+n+2, r.Name)
		}
		if hs := cell["Host"]; hs != "" && hs != "*" {
			r.Hosts = strings.Split(hs, ",")
		}
		if ps := cell["Path"]; ps != "" {
			r.PathPrefixes = strings.Split(ps, ",")
		}
		if ts := cell["Target"]; ts != "" {
			for _, t := range strings.Split(ts, ",") {
				target, err := parseTarget(t)
				if err != nil {
					return nil, fmt.Errorf("kamal-proxy list line %d: %w", h+n+2, err)
				}
				r.Targets = append(r.Targets, target)
			}
		}
		routes = append(routes, r)
	}
	slices.SortFunc(routes, func(a, b proxy.LiveRoute) int { return strings.Compare(a.Name, b.Name) })
	return routes, nil
}

// parseTarget parses host[:port]; kamal-proxy's default port is 80.
func parseTarget(s string) (proxy.Target, error) {
	name, port, found := strings.Cut(s, ":")
	t := proxy.Target{Container: name, Port: 80}
	if found {
		p, err := strconv.Atoi(port)
		if err != nil {
			return proxy.Target{}, fmt.Errorf("%w: target %q", proxy.ErrParse, s)
		}
		t.Port = p
	}
	if err := t.Validate(); err != nil {
		return proxy.Target{}, fmt.Errorf("%w: target %q: %w", proxy.ErrParse, s, err)
	}
	return t, nil
}

// Stale returns the deployments of want that live does not route as
// desired: the route is missing, or its targets, hosts, path prefixes or
// TLS differ. Pause and stop states are left alone (they are maintenance
// mode, set on purpose). The order of want is kept.
func Stale(live []proxy.LiveRoute, want []proxy.Deployment) []proxy.Deployment {
	byName := make(map[string]proxy.LiveRoute, len(live))
	for _, r := range live {
		byName[r.Name] = r
	}
	var stale []proxy.Deployment
	for _, d := range want {
		r, ok := byName[d.Route.Name()]
		if !ok || !routed(r, d) {
			stale = append(stale, d)
		}
	}
	return stale
}

func routed(r proxy.LiveRoute, d proxy.Deployment) bool {
	if len(r.Targets) != 1 || !SameContainer(r.Targets[0].Container, d.Target.Container) || r.Targets[0].Port != d.Target.Port {
		return false
	}
	if !sameSet(r.Hosts, d.Route.Options.Hosts) {
		return false
	}
	lp, wp := r.PathPrefixes, d.Route.Options.PathPrefixes
	if len(lp) == 1 && lp[0] == "/" {
		lp = nil
	}
	if len(wp) == 1 && wp[0] == "/" {
		wp = nil
	}
	return sameSet(lp, wp) && r.TLS == d.Route.Options.TLS
}

// SameContainer reports whether two container references name the same
// container: equal, or one a prefix of the other of at least 12 characters
// (a short and a full container ID).
func SameContainer(a, b string) bool {
	if a == b {
		return true
	}
	if len(a) > len(b) {
		a, b = b, a
	}
	return len(a) >= 12 && strings.HasPrefix(b, a)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// ReassertArgs returns the deploy commands that put back every stale route
// of want, given `kamal-proxy list` output (see Stale).
func ReassertArgs(s Settings, listOutput []byte, want []proxy.Deployment) ([][]string, error) {
	live, err := ParseList(listOutput)
	if err != nil {
		return nil, err
	}
	var cmds [][]string
	for _, d := range Stale(live, want) {
		argv, err := DeployArgs(s, d.Route, d.Target)
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, argv)
	}
	return cmds, nil
}
