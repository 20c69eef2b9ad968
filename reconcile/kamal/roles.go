package kamal

import (
	"sort"
)

func (b *builder) roles() {
	c, root := b.c, b.root
	servers := root.get("servers")
	if servers == nil {
		return
	}
	type rawRole struct {
		name string
		n    *node // role map, or nil for the simple form
		h    *node // hosts list
		file string
		line int
	}
	var raws []rawRole
	if servers.isSeq() {
		raws = append(raws, rawRole{name: DefaultPrimaryRole, h: servers, file: root.keyFile("servers"), line: root.keyLine("servers")})
	} else {
		for i, name := range servers.keys {
			rn := servers.vals[i]
			if rn.isSeq() {
				raws = append(raws, rawRole{name: name, h: rn, file: servers.kfiles[i], line: servers.klines[i]})
			} else {
				raws = append(raws, rawRole{name: name, n: rn, h: rn.get("hosts"), file: servers.kfiles[i], line: servers.klines[i]})
			}
		}
	}
	rootEnv := b.envSpec(root.get("env"), "env")
	tagEnvs := map[string]EnvSpec{}
	if te := root.get("env").get("tags"); te != nil {
		for i, tag := range te.keys {
			tagEnvs[tag] = b.envSpec(te.vals[i], joinPath("env.tags", tag))
		}
	}
	c.tagEnvs = tagEnvs
	c.rootEnv = rootEnv
	rootProxy := root.get("proxy")
	for _, raw := range raws {
		p := joinPath("servers", raw.name)
		if servers.isSeq() {
			p = "servers"
		}
		r := &Role{Name: raw.name, tags: map[string][]string{}, Restart: DefaultRestart}
		if raw.h != nil {
			hp := p
			if raw.n != nil {
				hp = joinPath(p, "hosts")
			}
			for i, it := range raw.h.items {
				host, tags := it.str(), []string(nil)
				if it.isMap() {
					host = it.keys[0]
					t := it.vals[0]
					if t.isSeq() {
						tags = strs(t)
					} else {
						tags = []string{t.str()}
					}
				}
				if contains(r.Hosts, host) {
					b.err(it, indexPath(hp, i), "duplicate host %s", host)
					continue
				}
				r.Hosts = append(r.Hosts, host)
				r.tags[host] = tags
			}
		}
		rn := raw.n
		r.Cmd = rn.get("cmd").str()
		r.cmdArgs = b.cmdArgs(rn.get("cmd"), joinPath(p, "cmd"))
		r.Options, r.Restart = options(rn.get("options"))
		r.Labels = mergeKV(c.Labels, kvs(rn.get("labels")))
		r.Logging = c.Logging
		if rl := rn.get("logging"); rl != nil {
			r.Logging = logging(deepMerge(orEmpty(root.get("logging")), rl))
		}
		r.AssetPath = strOr(rn.get("asset_path"), root.get("asset_path").str())
		if n := rn.get("stop_timeout"); n != nil {
			v := int(n.intValue())
			r.StopTimeout = &v
		} else {
			r.StopTimeout = c.StopTimeout
		}
		r.env = b.envSpec(rn.get("env"), joinPath(p, "env"))
		// Proxy: primary role unless proxy: false; others only if set.
		rp := rn.get("proxy")
		primary := raw.name == c.PrimaryRole
		running := (primary && !(rp.isBool() && !rp.boolValue())) || (!primary && rp != nil && !(rp.isBool() && !rp.boolValue()))
		if running {
			pn := orEmpty(rootProxy)
			pp := "proxy"
			if rp.isMap() {
				pn = deepMerge(pn, rp)
				pp = joinPath(p, "proxy")
			}
			r.Proxy = b.proxy(pn, pp, rootProxy, rp)
		}
		if len(r.Hosts) == 0 {
			switch {
			case primary:
				b.errs.add(ErrInvalid, raw.file, raw.line, p, "no servers specified for the %s primary_role", raw.name)
			case !c.AllowEmptyRoles:
				b.errs.add(ErrInvalid, raw.file, raw.line, p, "no servers specified for the %s role. You can ignore this with allow_empty_roles: true", raw.name)
			}
		}
		if r.Proxy != nil && r.Proxy.SSL && !r.Proxy.CustomCert() && len(r.Hosts) > 1 {
			b.errs.add(ErrInvalid, raw.file, raw.line, p, "SSL is only supported on a single server unless you provide custom certificates, found %d servers for role %s", len(r.Hosts), r.Name)
		}
		c.Roles = append(c.Roles, r)
	}
	sort.SliceStable(c.Roles, func(i, j int) bool {
		pi, pj := c.Roles[i].Name == c.PrimaryRole, c.Roles[j].Name == c.PrimaryRole
		if pi != pj {
			return pi
		}
		return c.Roles[i].Name < c.Roles[j].Name
	})
	if len(c.Roles) > 0 && c.Role(c.PrimaryRole) == nil {
		file, line := root.keyFile("primary_role"), root.keyLine("primary_role")
		if !root.has("primary_role") {
			file, line = root.keyFile("servers"), root.keyLine("servers")
		}
		b.errs.add(ErrInvalid, file, line, "primary_role", "the primary_role %s isn't defined", c.PrimaryRole)
	}
}

func orEmpty(n *node) *node {
	if n.isMap() {
		return n
	}
	return &node{kind: mapNode}
}
