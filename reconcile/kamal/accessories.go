package kamal

import (
	"sort"
)

func (b *builder) accessories() {
	c, root := b.c, b.root
	acc := root.get("accessories")
	if acc == nil {
		return
	}
	for i, name := range acc.keys {
		n := acc.vals[i]
		p := joinPath("accessories", name)
		a := &Accessory{Name: name, Restart: DefaultRestart}
		a.Service = strOr(n.get("service"), c.Service+"-"+name)
		a.Image = n.get("image").str()
		if a.Image == "" {
			b.errs.add(ErrInvalid, acc.kfiles[i], acc.klines[i], joinPath(p, "image"), "missing required configuration")
		}
		if rg := n.get("registry"); rg != nil {
			r := b.registry(rg, joinPath(p, "registry"))
			a.Registry = &r
			if r.Server != "" && a.Image != "" {
				a.Image = r.Server + "/" + a.Image // as Kamal: [registry.server, image].join("/")
			}
		}
		var placement []string
		for _, k := range []string{"host", "hosts", "role", "roles", "tag", "tags"} {
			if n.has(k) {
				placement = append(placement, k)
			}
		}
		if len(placement) != 1 {
			b.errs.add(ErrInvalid, acc.kfiles[i], acc.klines[i], p, "specify one of `host`, `hosts`, `role`, `roles`, `tag` or `tags`")
		} else {
			a.Hosts = b.accessoryHosts(n, placement[0], p)
		}
		a.Cmd = n.get("cmd").str()
		a.cmdArgs = b.cmdArgs(n.get("cmd"), joinPath(p, "cmd"))
		if pt := n.get("port"); pt != nil {
			a.Port = scalarString(pt)
		}
		a.Labels = kvs(n.get("labels"))
		a.Options, a.Restart = options(n.get("options"))
		a.env = b.envSpec(n.get("env"), joinPath(p, "env"))
		a.Files = mounts(n.get("files"))
		a.Directories = mounts(n.get("directories"))
		for j, m := range append(append([]Mount(nil), a.Files...), a.Directories...) {
			if m.Local == "" || m.Remote == "" {
				b.err(n, p, "files and directories entries need local:remote (entry %d)", j)
			}
		}
		a.Volumes = strs(n.get("volumes"))
		a.Network = strOr(n.get("network"), DefaultNetwork)
		if pn := n.get("proxy"); pn != nil {
			a.Proxy = b.proxy(pn, joinPath(p, "proxy"), pn)
		}
		c.Accessories = append(c.Accessories, a)
	}
	sort.SliceStable(c.Accessories, func(i, j int) bool { return c.Accessories[i].Name < c.Accessories[j].Name })
}

func (b *builder) accessoryHosts(n *node, k, p string) []string {
	c := b.c
	v := n.get(k)
	var out []string
	add := func(h string) {
		if !contains(out, h) {
			out = append(out, h)
		}
	}
	switch k {
	case "host":
		add(v.str())
	case "hosts":
		for _, h := range strs(v) {
			add(h)
		}
	case "role", "roles":
		names := []string{v.str()}
		if k == "roles" {
			names = strs(v)
		}
		for _, name := range names {
			r := c.Role(name)
			if r == nil {
				b.err(v, joinPath(p, k), "unknown role %s", name)
				continue
			}
			for _, h := range r.Hosts {
				add(h)
			}
		}
	case "tag", "tags":
		tags := []string{v.str()}
		if k == "tags" {
			tags = strs(v)
		}
		for _, t := range tags {
			for _, h := range c.AllHosts() {
				for _, r := range c.Roles {
					if contains(r.tags[h], t) {
						add(h)
					}
				}
			}
		}
	}
	return out
}
