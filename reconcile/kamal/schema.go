package kamal

import (
	"sort"
	"strings"
)

// The schema mirrors Kamal 2.12's example-driven validator
// (lib/kamal/configuration/validator*.rb with docs/*.yml as examples):
// unknown keys are rejected, "stringish" scalars pass where a string is
// expected, integers are strict, and some keys have special shapes.

type typ int

const (
	tString      typ = iota // any scalar
	tInt                    // integer scalar
	tBool                   // boolean scalar
	tStruct                 // map with known fields
	tHash                   // map with anything inside (options, args)
	tStrHash                // map of stringish values (labels)
	tList                   // list of elem
	tHosts                  // list of hosts, each a string or {host: tag|[tags]}
	tPaths                  // list of "a:b" strings or {local, remote, mode, owner, options}
	tStrOrList              // string, or list of strings (builder.arch)
	tSSHConfig              // bool, string or list of strings
	tAny                    // not checked
	tProxy                  // bool (roles only) or proxy struct
	tSSL                    // bool or {certificate_pem, private_key_pem}
	tEnv                    // env: plain map or clear/secret[/tags]
	tServers                // servers: hosts list or role map
	tSecretRef              // string or one-element list naming a secret
	tHooksOutput            // string or map of strings
	tAccessories            // map name -> accessory
	tAliases                // map name -> string
)

type spec struct {
	t      typ
	fields map[string]*spec // tStruct
	elem   *spec            // tList, tStrHash
	tags   bool             // tEnv: tags allowed
	role   bool             // tProxy: bool allowed
}

func str() *spec                      { return &spec{t: tString} }
func integer() *spec                  { return &spec{t: tInt} }
func boolean() *spec                  { return &spec{t: tBool} }
func strList() *spec                  { return &spec{t: tList, elem: str()} }
func hash() *spec                     { return &spec{t: tHash} }
func fields(f map[string]*spec) *spec { return &spec{t: tStruct, fields: f} }
func labels() *spec                   { return &spec{t: tStrHash} }
func env(tags bool) *spec             { return &spec{t: tEnv, tags: tags} }

var proxyRunSpec = fields(map[string]*spec{
	"http_port": integer(), "https_port": integer(), "metrics_port": integer(),
	"debug": boolean(), "log_max_size": str(), "publish": boolean(),
	"bind_ips": strList(), "registry": str(), "repository": str(), "version": str(),
	"options": hash(),
})

func proxySpec(role bool) *spec {
	return &spec{t: tProxy, role: role, fields: map[string]*spec{
		"host": str(), "hosts": strList(), "app_port": integer(),
		"ssl": {t: tSSL}, "ssl_redirect": boolean(), "forward_headers": boolean(),
		"response_timeout": integer(), "path_prefix": str(), "path_prefixes": strList(),
		"strip_path_prefix": boolean(),
		"healthcheck":       fields(map[string]*spec{"interval": integer(), "path": str(), "timeout": integer()}),
		"buffering": fields(map[string]*spec{
			"requests": boolean(), "responses": boolean(), "max_request_body": integer(),
			"max_response_body": integer(), "memory": integer(),
		}),
		"logging": fields(map[string]*spec{"request_headers": strList(), "response_headers": strList()}),
		"run":     proxyRunSpec,
	}}
}

var loggingSpec = fields(map[string]*spec{"driver": str(), "options": hash()})

var registrySpec = fields(map[string]*spec{"server": str(), "username": {t: tSecretRef}, "password": {t: tSecretRef}})

var roleSpec = fields(map[string]*spec{
	"hosts": {t: tHosts}, "cmd": str(), "options": hash(), "labels": labels(),
	"env": env(false), "logging": loggingSpec, "proxy": proxySpec(true),
	"asset_path": str(), "stop_timeout": integer(),
})

var accessorySpec = fields(map[string]*spec{
	"service": str(), "image": str(), "registry": registrySpec,
	"host": str(), "hosts": strList(), "role": str(), "roles": strList(), "tag": str(), "tags": strList(),
	"cmd": str(), "port": str(), "labels": labels(), "options": hash(), "env": env(false),
	"files": {t: tPaths}, "directories": {t: tPaths}, "volumes": strList(), "network": str(),
	"proxy": proxySpec(false),
})

var builderSpec = fields(map[string]*spec{
	"arch": {t: tStrOrList}, "remote": str(), "local": boolean(), "driver": str(),
	"cache":   fields(map[string]*spec{"type": str(), "options": str(), "image": str()}),
	"context": str(), "dockerfile": str(), "target": str(), "args": hash(), "secrets": strList(),
	"ssh": str(), "provenance": str(), "sbom": boolean(),
	"pack":                fields(map[string]*spec{"builder": str(), "buildpacks": strList()}),
	"additional_contexts": hash(),
})

var rootSpec = fields(map[string]*spec{
	"service": str(), "image": str(), "labels": labels(), "volumes": strList(),
	"registry": registrySpec, "servers": {t: tServers}, "env": env(true),
	"asset_path": str(), "hooks_path": str(), "hooks_output": {t: tHooksOutput},
	"secrets_path": str(), "error_pages_path": str(), "require_destination": boolean(),
	"primary_role": str(), "allow_empty_roles": boolean(), "retain_containers": integer(),
	"minimum_version": str(), "readiness_delay": integer(), "deploy_timeout": integer(),
	"drain_timeout": integer(), "stop_timeout": integer(), "run_directory": str(),
	"ssh": fields(map[string]*spec{
		"user": str(), "port": str(), "proxy": str(), "proxy_command": str(), "log_level": str(),
		"keys_only": boolean(), "keys": strList(), "key_data": strList(), "config": {t: tSSHConfig},
		"forward_agent": boolean(),
	}),
	"sshkit":      fields(map[string]*spec{"max_concurrent_starts": integer(), "pool_idle_timeout": integer(), "dns_retries": integer()}),
	"builder":     builderSpec,
	"accessories": {t: tAccessories},
	"proxy":       proxySpec(false),
	"boot":        fields(map[string]*spec{"limit": str(), "wait": integer(), "parallel_roles": boolean()}),
	"logging":     loggingSpec,
	"output": fields(map[string]*spec{
		"file": fields(map[string]*spec{"path": str()}),
		"otel": fields(map[string]*spec{"endpoint": str()}),
	}),
	"aliases": {t: tAliases},
})

// validator walks a merged tree against the schema.
type validator struct{ errs *collector }

func (v *validator) typeErr(n *node, path string, want string) {
	v.errs.at(ErrInvalid, n, path, "should be %s (found %s)", want, n.typeName())
}

func (v *validator) check(n *node, s *spec, path string) {
	if n.isNull() && s.t != tAny {
		// Ruby's validator treats nil as the wrong type, except for keys
		// the code reads with dig (we report it like Kamal does).
		v.errs.at(ErrInvalid, n, path, "should be %s (found nothing)", describe(s))
		return
	}
	switch s.t {
	case tAny:
	case tString:
		if !n.stringish() {
			v.typeErr(n, path, "a string")
		}
	case tInt:
		if !n.isInt() {
			v.typeErr(n, path, "an integer")
		}
	case tBool:
		if !n.isBool() {
			v.typeErr(n, path, "a boolean")
		}
	case tHash:
		if !n.isMap() {
			v.typeErr(n, path, "a hash")
		}
	case tStrHash:
		if !n.isMap() {
			v.typeErr(n, path, "a hash")
			return
		}
		for i, k := range n.keys {
			if !n.vals[i].stringish() {
				v.typeErr(n.vals[i], joinPath(path, k), "a string")
			}
		}
	case tList:
		if !n.isSeq() {
			v.typeErr(n, path, "an array")
			return
		}
		for i, it := range n.items {
			v.check(it, s.elem, indexPath(path, i))
		}
	case tStruct:
		v.checkStruct(n, s, path)
	case tHosts:
		v.checkHosts(n, path)
	case tPaths:
		if !n.isSeq() {
			v.typeErr(n, path, "an array")
			return
		}
		for i, it := range n.items {
			p := indexPath(path, i)
			switch {
			case it.isMap():
				v.checkStruct(it, fields(map[string]*spec{"local": str(), "remote": str(), "mode": str(), "owner": str(), "options": str()}), p)
			case !it.stringish():
				v.typeErr(it, p, "a string or a hash")
			}
		}
	case tStrOrList:
		if n.isSeq() {
			for i, it := range n.items {
				if !it.stringish() {
					v.typeErr(it, indexPath(path, i), "a string")
				}
			}
		} else if !n.stringish() {
			v.typeErr(n, path, "an array or a string")
		}
	case tSSHConfig:
		if n.isSeq() {
			v.check(n, strList(), path)
		} else if !n.stringish() {
			v.typeErr(n, path, "a boolean or a string or an array")
		}
	case tSSL:
		if n.isMap() {
			v.checkStruct(n, fields(map[string]*spec{"certificate_pem": str(), "private_key_pem": str()}), path)
		} else if !n.isBool() {
			v.typeErr(n, path, "a boolean or a hash")
		}
	case tProxy:
		if s.role && n.isBool() {
			return
		}
		if !n.isMap() {
			if s.role {
				v.typeErr(n, path, "a boolean or a hash")
			} else {
				v.typeErr(n, path, "a hash")
			}
			return
		}
		v.checkStruct(n, &spec{t: tStruct, fields: s.fields}, path)
	case tEnv:
		v.checkEnv(n, s.tags, path)
	case tServers:
		switch {
		case n.isSeq():
			v.checkHosts(n, path)
		case n.isMap():
			for i, role := range n.keys {
				rn := n.vals[i]
				p := joinPath(path, role)
				if rn.isSeq() {
					v.checkHosts(rn, p)
				} else if rn.isMap() {
					v.checkStruct(rn, roleSpec, p)
					v.checkLabels(rn.get("labels"), joinPath(p, "labels"))
					v.checkOptions(rn.get("options"), joinPath(p, "options"))
				} else {
					v.typeErr(rn, p, "an array or a hash")
				}
			}
		default:
			v.typeErr(n, path, "an array or a hash")
		}
	case tSecretRef:
		if n.isSeq() {
			if len(n.items) != 1 || !n.items[0].stringish() {
				v.errs.at(ErrInvalid, n, path, "should be a string or an array with one string (for secret lookup)")
			}
		} else if !n.stringish() {
			v.errs.at(ErrInvalid, n, path, "should be a string or an array with one string (for secret lookup)")
		}
	case tHooksOutput:
		if n.isMap() {
			for i, k := range n.keys {
				if !n.vals[i].stringish() {
					v.typeErr(n.vals[i], joinPath(path, k), "a string")
				}
			}
		} else if !n.stringish() {
			v.typeErr(n, path, "a string or a hash")
		}
	case tAccessories:
		if !n.isMap() {
			v.typeErr(n, path, "a hash")
			return
		}
		for i, name := range n.keys {
			an := n.vals[i]
			p := joinPath(path, name)
			if !an.isMap() {
				v.typeErr(an, p, "a hash")
				continue
			}
			v.checkStruct(an, accessorySpec, p)
			v.checkLabels(an.get("labels"), joinPath(p, "labels"))
			v.checkOptions(an.get("options"), joinPath(p, "options"))
		}
	case tAliases:
		if !n.isMap() {
			v.typeErr(n, path, "a hash")
			return
		}
		for i, name := range n.keys {
			p := joinPath(path, name)
			if !n.vals[i].stringish() {
				v.typeErr(n.vals[i], p, "a string")
			}
			if !reAliasName.MatchString(name) {
				v.errs.at(ErrInvalid, n.vals[i], p, "invalid alias name; use only a-z, 0-9, _ and -")
			}
		}
	}
}

func describe(s *spec) string {
	switch s.t {
	case tInt:
		return "an integer"
	case tBool:
		return "a boolean"
	case tString:
		return "a string"
	case tList, tHosts, tPaths:
		return "an array"
	case tProxy:
		if s.role {
			return "a boolean or a hash"
		}
		return "a hash"
	case tSSL:
		return "a boolean or a hash"
	case tServers:
		return "an array or a hash"
	default:
		return "a hash"
	}
}

func (v *validator) checkStruct(n *node, s *spec, path string) {
	if !n.isMap() {
		v.typeErr(n, path, "a hash")
		return
	}
	var unknown []string
	for i, k := range n.keys {
		if path == "" && strings.HasPrefix(k, "x-") {
			continue
		}
		fs, ok := s.fields[k]
		if !ok {
			unknown = append(unknown, k)
			continue
		}
		v.check(n.vals[i], fs, joinPath(path, k))
	}
	for _, k := range unknown {
		v.errs.add(ErrInvalid, n.keyFile(k), n.keyLine(k), joinPath(path, k), "unknown key%s", suggest(k, s.fields))
	}
}

// suggest returns ` (did you mean "x"?)` for a near miss.
func suggest(k string, known map[string]*spec) string {
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, name := range names {
		if d := editDistance(k, name); d < bestD {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean \"" + best + "\"?)"
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (v *validator) checkHosts(n *node, path string) {
	if !n.isSeq() {
		v.typeErr(n, path, "an array")
		return
	}
	for i, it := range n.items {
		p := indexPath(path, i)
		switch {
		case it.isMap():
			if len(it.keys) != 1 {
				v.errs.at(ErrInvalid, it, p, "multiple hosts found")
				continue
			}
			tags := it.vals[0]
			tp := joinPath(p, it.keys[0])
			if tags.isSeq() {
				for j, t := range tags.items {
					if !t.stringish() {
						v.typeErr(t, indexPath(tp, j), "a string")
					}
				}
			} else if !tags.stringish() {
				v.typeErr(tags, tp, "a string or an array")
			}
		case !it.stringish():
			v.typeErr(it, p, "a string or a hash")
		case strings.TrimSpace(it.value) == "":
			v.errs.at(ErrInvalid, it, p, "host is empty")
		}
	}
}

func (v *validator) checkEnv(n *node, tags bool, path string) {
	if !n.isMap() {
		v.typeErr(n, path, "a hash")
		return
	}
	complex := n.has("clear") || n.has("secret") || n.has("tags")
	if !complex {
		for i, k := range n.keys {
			if !n.vals[i].stringish() {
				v.typeErr(n.vals[i], joinPath(path, k), "a string")
			}
		}
		return
	}
	for i, k := range n.keys {
		p := joinPath(path, k)
		val := n.vals[i]
		switch k {
		case "clear":
			v.check(val, labels(), p)
		case "secret":
			v.check(val, strList(), p)
		case "tags":
			if !tags {
				v.errs.add(ErrInvalid, n.keyFile(k), n.keyLine(k), p, "unknown key (tags are only allowed in the root env)")
				continue
			}
			if !val.isMap() {
				v.typeErr(val, p, "a hash")
				continue
			}
			for j, tag := range val.keys {
				v.checkEnv(val.vals[j], false, joinPath(p, tag))
			}
		default:
			v.errs.add(ErrInvalid, n.keyFile(k), n.keyLine(k), p, "unknown key (with clear/secret/tags, only those keys are allowed)")
		}
	}
}

var reservedLabels = map[string]bool{"service": true, "role": true, "destination": true}

func (v *validator) checkLabels(n *node, path string) {
	if !n.isMap() {
		return
	}
	for i, k := range n.keys {
		if reservedLabels[k] {
			v.errs.add(ErrInvalid, n.kfiles[i], n.klines[i], joinPath(path, k), "invalid label. destination, role, and service are reserved labels")
		}
	}
}

func (v *validator) checkOptions(n *node, path string) {
	r := n.get("restart")
	if r == nil {
		return
	}
	p := joinPath(path, "restart")
	if !r.isScalar() || r.tag != "str" {
		v.errs.at(ErrInvalid, r, p, `should be a string. Use "no" to disable restarts`)
		return
	}
	if !reRestart.MatchString(r.value) {
		v.errs.at(ErrInvalid, r, p, "should be no, always, unless-stopped, on-failure, or on-failure:N")
	}
}
