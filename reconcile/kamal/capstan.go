package kamal

import (
	"strconv"
	"strings"
)

// SSH is deploy.yml's ssh: block.
type SSH struct {
	User     string // "" = root
	Port     int    // 0 = 22
	Proxy    string // jump host, "[user@]host[:port]"
	Keys     []string
	KeysOnly bool
	// KeyData are private keys given as secrets (their resolved values).
	KeyData []Secret
	// Config is true when ssh.config asks to read ~/.ssh/config; Files
	// lists other ssh_config files it names.
	Config      bool
	ConfigFiles []string

	keyDataRefs []string
}

// Capstan is capstan's own root block, x-capstan: (Kamal ignores x- keys,
// so the file stays valid for kamal).
type Capstan struct {
	// Proxy is "kamal-proxy" (default) or "haproxy".
	Proxy   string
	HAProxy HAProxySettings
	// SelfHeal converges drift found by sweeps (the daemon's app setting
	// overrides it).
	SelfHeal bool
	// RebootAccessories reboots an accessory whose spec changed.
	RebootAccessories bool
	// StopUnmanaged stops containers carrying the service label that no
	// role accounts for.
	StopUnmanaged bool
	// NoRollback keeps already switched hosts on a failed release
	// (rollback: false).
	NoRollback bool
	// Bake is how many seconds a new container is watched after it took
	// the traffic, the old one still running: a crash or restart in that
	// time gives the traffic back and fails the release (x-capstan.bake,
	// default DefaultBake; 0 stops the old container at once, as Kamal).
	Bake int
	// Jobs are the release jobs (x-capstan.jobs), in order.
	Jobs []Job
}

// DefaultBake is x-capstan.bake when unset.
const DefaultBake = 5

// HAProxySettings are x-capstan.haproxy.
type HAProxySettings struct {
	Image     string
	ConfigDir string
	SocketDir string
	HTTPPort  int
}

var capstanKeys = map[string]bool{"version": true, "proxy": true, "haproxy": true, "self_heal": true,
	"reboot_accessories": true, "stop_unmanaged": true, "rollback": true, "bake": true, "jobs": true}

// capstanBlock reads x-capstan: other than version.
func (b *builder) capstanBlock(xc *node) {
	c := &b.c.Capstan
	c.Proxy = "kamal-proxy"
	c.Bake = DefaultBake
	if xc == nil || !xc.isMap() {
		return
	}
	if n := xc.get("bake"); n != nil {
		if !n.isInt() || n.intValue() < 0 || n.intValue() > 3600 {
			b.err(n, "x-capstan.bake", "should be a number of seconds from 0 to 3600")
		} else {
			c.Bake = int(n.intValue())
		}
	}
	boolKey := func(k string, dst *bool, invert bool) {
		n := xc.get(k)
		if n == nil {
			return
		}
		if !n.isBool() {
			b.err(n, "x-capstan."+k, "should be a boolean (found %s)", n.typeName())
			return
		}
		*dst = n.boolValue() != invert
	}
	boolKey("self_heal", &c.SelfHeal, false)
	boolKey("reboot_accessories", &c.RebootAccessories, false)
	boolKey("stop_unmanaged", &c.StopUnmanaged, false)
	boolKey("rollback", &c.NoRollback, true)
	if n := xc.get("proxy"); n != nil {
		switch v := n.str(); v {
		case "kamal-proxy", "haproxy":
			c.Proxy = v
		default:
			b.err(n, "x-capstan.proxy", "%q: want kamal-proxy or haproxy", v)
		}
	}
	h := xc.get("haproxy")
	if h != nil && !h.isMap() {
		b.err(h, "x-capstan.haproxy", "should be a hash (found %s)", h.typeName())
		h = nil
	}
	if h != nil {
		for i, k := range h.keys {
			switch k {
			case "image", "config_dir", "socket_dir", "http_port":
			default:
				b.errs.add(ErrInvalid, h.kfiles[i], h.klines[i], "x-capstan.haproxy."+k, "unknown key (supported: image, config_dir, socket_dir, http_port)")
			}
		}
		c.HAProxy.Image = h.get("image").str()
		c.HAProxy.ConfigDir = h.get("config_dir").str()
		c.HAProxy.SocketDir = h.get("socket_dir").str()
		if p := h.get("http_port"); p != nil {
			if !p.isInt() || p.intValue() < 1 || p.intValue() > 65535 {
				b.err(p, "x-capstan.haproxy.http_port", "should be a port number")
			} else {
				c.HAProxy.HTTPPort = int(p.intValue())
			}
		}
		for _, d := range []struct{ k, v string }{{"config_dir", c.HAProxy.ConfigDir}, {"socket_dir", c.HAProxy.SocketDir}} {
			if d.v != "" && !strings.HasPrefix(d.v, "/") {
				b.err(h.get(d.k), "x-capstan.haproxy."+d.k, "must be an absolute path")
			}
		}
	}
	if c.Proxy == "haproxy" && c.HAProxy.Image == "" {
		b.err(xc.get("proxy"), "x-capstan.haproxy.image", "the HAProxy driver needs an image (x-capstan.haproxy.image, e.g. haproxy:2.8)")
	}
}

// sshBlock reads ssh: (already type-checked by the schema).
func (b *builder) sshBlock() {
	n := b.root.get("ssh")
	s := &b.c.SSH
	if n == nil || !n.isMap() {
		return
	}
	s.User = n.get("user").str()
	if p := n.get("port"); p != nil {
		v, err := strconv.Atoi(scalarString(p))
		if err != nil || v < 1 || v > 65535 {
			b.err(p, "ssh.port", "should be a port number")
		} else {
			s.Port = v
		}
	}
	s.Proxy = n.get("proxy").str()
	s.Keys = strs(n.get("keys"))
	if k := n.get("keys_only"); k != nil {
		s.KeysOnly = k.boolValue()
	}
	if kd := n.get("key_data"); kd.isSeq() {
		for i, it := range kd.items {
			name := scalarString(it)
			s.keyDataRefs = append(s.keyDataRefs, name)
			b.refs = append(b.refs, secretUse{key: name, loc: loc{it.file, it.line, indexPath("ssh.key_data", i)}})
		}
	}
	if cfg := n.get("config"); cfg != nil {
		switch {
		case cfg.isBool():
			s.Config = cfg.boolValue()
		case cfg.isSeq():
			s.Config, s.ConfigFiles = true, strs(cfg)
		default:
			s.Config, s.ConfigFiles = true, []string{cfg.str()}
		}
	}
	for _, k := range []string{"proxy_command"} {
		if n.has(k) {
			b.errKey(n, k, "ssh."+k, "not supported by capstan (use ssh.proxy, a jump host)")
		}
	}
}

// fillSSHSecrets puts the resolved key_data values in place.
func (c *Config) fillSSHSecrets() {
	c.SSH.KeyData = nil
	for _, name := range c.SSH.keyDataRefs {
		if v, ok := c.secrets[name]; ok {
			c.SSH.KeyData = append(c.SSH.KeyData, NewSecret(v))
		}
	}
}
