package kamal

import (
	"strconv"
	"strings"
)

// Decoding helpers: a node's value, with a default where one applies, in
// the shape a Config field takes.

func strOr(n *node, def string) string {
	if n.isScalar() && n.value != "" {
		return scalarString(n)
	}
	return def
}

func intOr(n *node, def int) int {
	if n.isInt() {
		return int(n.intValue())
	}
	return def
}

func optBool(n *node) *bool {
	if !n.isBool() {
		return nil
	}
	v := n.boolValue()
	return &v
}

func optInt(n *node) *int {
	if !n.isInt() {
		return nil
	}
	v := int(n.intValue())
	return &v
}

func optInt64(n *node) *int64 {
	if !n.isInt() {
		return nil
	}
	v := n.intValue()
	return &v
}

// scalarString renders a scalar the way Ruby's to_s would.
func scalarString(n *node) string {
	switch n.tag {
	case "int":
		return strconv.FormatInt(n.intValue(), 10)
	case "bool":
		return strconv.FormatBool(n.boolValue())
	}
	return n.value
}

func kvs(n *node) []KV {
	if !n.isMap() {
		return nil
	}
	out := make([]KV, 0, len(n.keys))
	for i, k := range n.keys {
		v := n.vals[i]
		out = append(out, KV{Key: k, Value: scalarString(v), isFalse: v.isBool() && !v.boolValue()})
	}
	return out
}

func strs(n *node) []string {
	if !n.isSeq() {
		return nil
	}
	out := make([]string, 0, len(n.items))
	for _, it := range n.items {
		out = append(out, scalarString(it))
	}
	return out
}

func mergeKV(a, b []KV) []KV {
	out := append([]KV(nil), a...)
	for _, kv := range b {
		found := false
		for i := range out {
			if out[i].Key == kv.Key {
				out[i] = kv
				found = true
			}
		}
		if !found {
			out = append(out, kv)
		}
	}
	return out
}

func logging(n *node) Logging {
	if n == nil {
		return Logging{}
	}
	return Logging{Driver: n.get("driver").str(), Options: kvs(n.get("options"))}
}

// options decodes an options: map; the restart option is pulled out.
func options(n *node) ([]Option, string) {
	restart := DefaultRestart
	if !n.isMap() {
		return nil, restart
	}
	var out []Option
	for i, k := range n.keys {
		v := n.vals[i]
		if k == "restart" {
			restart = v.str()
			continue
		}
		switch {
		case v.isBool() && v.boolValue():
			out = append(out, Option{Key: k, Flag: true})
		case v.isSeq():
			out = append(out, Option{Key: k, Values: strs(v)})
		case v.isNull():
			out = append(out, Option{Key: k, Flag: true})
		case v.isMap():
			// Ruby would stringify the hash; nobody means that.
			out = append(out, Option{Key: k, Values: []string{v.str()}})
		default:
			out = append(out, Option{Key: k, Values: []string{scalarString(v)}})
		}
	}
	return out, restart
}

func mounts(n *node) []Mount {
	if !n.isSeq() {
		return nil
	}
	var out []Mount
	for _, it := range n.items {
		if it.isMap() {
			out = append(out, Mount{Local: it.get("local").str(), Remote: it.get("remote").str(), Mode: it.get("mode").str(), Owner: it.get("owner").str(), Options: it.get("options").str()})
			continue
		}
		parts := strings.SplitN(scalarString(it), ":", 3)
		m := Mount{Local: parts[0]}
		if len(parts) > 1 {
			m.Remote = parts[1]
		}
		if len(parts) > 2 {
			m.Options = parts[2]
		}
		out = append(out, m)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// versionLess reports whether a < b comparing dotted numeric versions.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
