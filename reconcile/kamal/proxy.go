package kamal

import (
	"strings"
)

// proxy decodes a (merged) proxy map. src nodes are used for error locations.
func (b *builder) proxy(n *node, path string, srcs ...*node) *Proxy {
	p := &Proxy{AppPort: DefaultAppPort, BufferRequests: true, BufferResponses: true}
	at := func(k string) *node {
		// the most specific source defining k, for error lines
		for i := len(srcs) - 1; i >= 0; i-- {
			if srcs[i].has(k) {
				return srcs[i]
			}
		}
		return n
	}
	if n.has("host") && n.has("hosts") {
		b.errKey(at("hosts"), "hosts", path, "specify one of 'host' or 'hosts', not both")
	}
	if h := n.get("hosts"); h != nil {
		p.Hosts = strs(h)
	} else if h := n.get("host"); h != nil {
		for _, s := range strings.Split(h.str(), ",") {
			if s = strings.TrimSpace(s); s != "" {
				p.Hosts = append(p.Hosts, s)
			}
		}
	}
	if v := n.get("app_port"); v != nil {
		p.AppPort = int(v.intValue())
		if p.AppPort < 1 || p.AppPort > 65535 {
			b.err(v, joinPath(path, "app_port"), "should be a port number between 1 and 65535")
		}
	}
	if s := n.get("ssl"); s != nil {
		if s.isMap() {
			p.SSL = true
			p.CertificatePEM = s.get("certificate_pem").str()
			p.PrivateKeyPEM = s.get("private_key_pem").str()
			sp := joinPath(path, "ssl")
			switch {
			case p.CertificatePEM == "" && p.PrivateKeyPEM == "":
				b.err(s, sp, "certificate_pem and private_key_pem are required for a custom certificate")
			case p.CertificatePEM == "":
				b.err(s, sp, "missing certificate_pem setting (required when private_key_pem is present)")
			case p.PrivateKeyPEM == "":
				b.err(s, sp, "missing private_key_pem setting (required when certificate_pem is present)")
			default:
				b.refs = append(b.refs,
					secretUse{key: p.CertificatePEM, loc: loc{s.file, s.get("certificate_pem").line, joinPath(sp, "certificate_pem")}},
					secretUse{key: p.PrivateKeyPEM, loc: loc{s.file, s.get("private_key_pem").line, joinPath(sp, "private_key_pem")}})
			}
		} else {
			p.SSL = s.boolValue()
		}
		if p.SSL && len(p.Hosts) == 0 && !p.CustomCert() {
			b.errKey(at("ssl"), "ssl", path, "must set a host to enable automatic SSL")
		}
	}
	p.SSLRedirect = optBool(n.get("ssl_redirect"))
	p.ForwardHeaders = optBool(n.get("forward_headers"))
	p.ResponseTimeout = optInt(n.get("response_timeout"))
	if v := n.get("path_prefixes"); v != nil {
		p.PathPrefixes = strs(v)
	} else if v := n.get("path_prefix"); v != nil {
		for _, s := range strings.Split(v.str(), ",") {
			if s = strings.TrimSpace(s); s != "" {
				p.PathPrefixes = append(p.PathPrefixes, s)
			}
		}
	}
	p.StripPathPrefix = optBool(n.get("strip_path_prefix"))
	if hc := n.get("healthcheck"); hc != nil {
		p.Healthcheck.Path = hc.get("path").str()
		p.Healthcheck.Interval = optInt(hc.get("interval"))
		p.Healthcheck.Timeout = optInt(hc.get("timeout"))
	}
	if bf := n.get("buffering"); bf != nil {
		if v := bf.get("requests"); v != nil {
			p.BufferRequests = v.boolValue()
		}
		if v := bf.get("responses"); v != nil {
			p.BufferResponses = v.boolValue()
		}
		p.BufferMemory = optInt64(bf.get("memory"))
		p.MaxRequestBody = optInt64(bf.get("max_request_body"))
		p.MaxResponseBody = optInt64(bf.get("max_response_body"))
	}
	p.LogRequestHeaders = DefaultLogRequestHeaders
	if lg := n.get("logging"); lg != nil {
		if v := lg.get("request_headers"); v != nil {
			p.LogRequestHeaders = strs(v)
		}
		p.LogResponseHeaders = strs(lg.get("response_headers"))
	}
	if r := n.get("run"); r != nil {
		p.Run = proxyRun(r)
		if !p.Run.Publish && (r.has("http_port") || r.has("https_port") || r.has("bind_ips")) {
			b.err(r, joinPath(path, "run"), "http_port, https_port and bind_ips cannot be set when publish is false")
		}
	}
	return p
}

func proxyRun(n *node) *ProxyRun {
	r := &ProxyRun{
		HTTPPort: intOr(n.get("http_port"), DefaultProxyHTTPPort), HTTPSPort: intOr(n.get("https_port"), DefaultProxyHTTPSPort),
		MetricsPort: intOr(n.get("metrics_port"), 0), Debug: n.get("debug").boolValue(),
		LogMaxSize: strOr(n.get("log_max_size"), DefaultLogMaxSize), Publish: true,
		BindIPs: strs(n.get("bind_ips")), Registry: n.get("registry").str(),
		Repository: strOr(n.get("repository"), DefaultProxyRepository), Version: strOr(n.get("version"), DefaultProxyVersion),
	}
	if v := n.get("publish"); v != nil {
		r.Publish = v.boolValue()
	}
	r.Options, _ = options(n.get("options"))
	return r
}

// proxyRules checks rules that span roles and accessories.
func (b *builder) proxyRules() {
	c := b.c
	servers := b.root.get("servers")
	sslHosts := map[string]string{}
	for _, r := range c.Roles {
		if r.Proxy == nil || !r.Proxy.SSL {
			continue
		}
		for _, h := range r.Proxy.Hosts {
			if other, ok := sslHosts[h]; ok && other != r.Name {
				b.errs.add(ErrInvalid, servers.keyFile(r.Name), servers.keyLine(r.Name), joinPath("servers", r.Name), "different roles can't share the same host for SSL: %s", h)
			}
			sslHosts[h] = r.Name
		}
	}
	// proxy.run blocks on one host must be identical.
	for _, h := range c.AllHosts() {
		var first *ProxyRun
		set := false
		for _, p := range c.proxiesOn(h) {
			if !set {
				first, set = p.Run, true
				continue
			}
			if !equalRun(first, p.Run) {
				b.errs.add(ErrInvalid, b.root.keyFile("proxy"), b.root.keyLine("proxy"), "proxy.run", "all proxy run configurations for host %s must be identical", h)
				break
			}
		}
	}
}

func equalRun(a, b *ProxyRun) bool {
	if a == nil || b == nil {
		return a == b
	}
	return strings.Join(proxyRunArgs(a), "\x00") == strings.Join(proxyRunArgs(b), "\x00")
}
