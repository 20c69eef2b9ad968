package kamal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Limits applied while reading configuration files. They make hostile
// input (huge files, alias bombs, deep nesting) fail fast.
const (
	// MaxFileSize is the largest configuration or secrets file accepted,
	// before and after ERB rendering.
	MaxFileSize = 1 << 20
	// maxNodes bounds the number of nodes after alias and merge-key
	// expansion, across all files of one load.
	maxNodes = 200_000
	// maxDepth bounds nesting (and breaks alias cycles).
	maxDepth = 100
)

type nodeKind int

const (
	nullNode nodeKind = iota
	scalarNode
	mapNode
	seqNode
)

// node is a YAML value with the file and line it came from, after aliases
// and merge keys have been resolved. Maps keep their key order.
type node struct {
	kind   nodeKind
	tag    string // for scalars: "str", "int", "float", "bool"
	value  string // scalar text
	keys   []string
	vals   []*node
	klines []int    // line of each key
	kfiles []string // file of each key (destination files override keys)
	items  []*node
	file   string
	line   int
}

func (n *node) isMap() bool    { return n != nil && n.kind == mapNode }
func (n *node) isSeq() bool    { return n != nil && n.kind == seqNode }
func (n *node) isScalar() bool { return n != nil && n.kind == scalarNode }
func (n *node) isNull() bool   { return n == nil || n.kind == nullNode }

// get returns the value for key k of a map node, or nil.
func (n *node) get(k string) *node {
	if !n.isMap() {
		return nil
	}
	for i, key := range n.keys {
		if key == k {
			return n.vals[i]
		}
	}
	return nil
}

func (n *node) has(k string) bool {
	if !n.isMap() {
		return false
	}
	for _, key := range n.keys {
		if key == k {
			return true
		}
	}
	return false
}

// keyFile returns the file key k was written in (falls back to the map's).
func (n *node) keyFile(k string) string {
	for i, key := range n.keys {
		if key == k {
			return n.kfiles[i]
		}
	}
	return n.file
}

// keyLine returns the line of key k (falls back to the map's line).
func (n *node) keyLine(k string) int {
	for i, key := range n.keys {
		if key == k {
			return n.klines[i]
		}
	}
	return n.line
}

func (n *node) set(k string, v *node, file string, line int) {
	for i, key := range n.keys {
		if key == k {
			n.vals[i] = v
			n.kfiles[i], n.klines[i] = file, line
			return
		}
	}
	n.keys = append(n.keys, k)
	n.vals = append(n.vals, v)
	n.klines = append(n.klines, line)
	n.kfiles = append(n.kfiles, file)
}

// str returns the scalar text ("" for null or non-scalars).
func (n *node) str() string {
	if n.isScalar() {
		return n.value
	}
	return ""
}

// stringish reports whether n is a scalar Kamal accepts where a string is
// expected (strings, numbers, booleans).
func (n *node) stringish() bool { return n.isScalar() }

func (n *node) isInt() bool { return n.isScalar() && n.tag == "int" }

func (n *node) isBool() bool { return n.isScalar() && n.tag == "bool" }

func (n *node) boolValue() bool {
	if !n.isBool() {
		return false
	}
	switch strings.ToLower(n.value) {
	case "true", "yes", "on", "y":
		return true
	}
	return false
}

// intValue returns the integer value (0 for null, absent or non-integers).
func (n *node) intValue() int64 {
	if !n.isScalar() {
		return 0
	}
	s := strings.ReplaceAll(n.value, "_", "")
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return 0
	}
	return v
}

// typeName describes n for error messages.
func (n *node) typeName() string {
	switch {
	case n.isNull():
		return "nothing"
	case n.isMap():
		return "a hash"
	case n.isSeq():
		return "an array"
	case n.tag == "int":
		return "an integer"
	case n.tag == "bool":
		return "a boolean"
	case n.tag == "float":
		return "a float"
	default:
		return "a string"
	}
}

// clone returns a deep copy of n.
func (n *node) clone() *node {
	if n == nil {
		return nil
	}
	c := *n
	c.keys = append([]string(nil), n.keys...)
	c.klines = append([]int(nil), n.klines...)
	c.kfiles = append([]string(nil), n.kfiles...)
	c.vals = make([]*node, len(n.vals))
	for i, v := range n.vals {
		c.vals[i] = v.clone()
	}
	c.items = make([]*node, len(n.items))
	for i, v := range n.items {
		c.items[i] = v.clone()
	}
	return &c
}

// deepMerge merges over into base the way ActiveSupport's deep_merge does:
// maps merge recursively, everything else in over replaces base.
func deepMerge(base, over *node) *node {
	if base.isMap() && over.isMap() {
		out := base.clone()
		for i, k := range over.keys {
			ov := over.vals[i]
			if bv := out.get(k); bv.isMap() && ov.isMap() {
				out.set(k, deepMerge(bv, ov), over.kfiles[i], over.klines[i])
				continue
			}
			out.set(k, ov.clone(), over.kfiles[i], over.klines[i])
		}
		// A merged map keeps the location of the override when the base had none.
		return out
	}
	return over.clone()
}

// parser converts yaml.v3 nodes into *node, resolving aliases and merge
// keys within a shared node budget.
type parser struct {
	file   string
	budget int
	errs   *collector
	lines  []int // output line → source line (ERB may shift lines)
}

var errBudget = errors.New("budget")

func (p *parser) srcLine(l int) int {
	if l >= 1 && l <= len(p.lines) {
		return p.lines[l-1]
	}
	return l
}

// parseYAML parses one rendered file. lines maps rendered lines to source
// lines (nil = identity). It returns nil after recording an error.
func parseYAML(file string, data []byte, lines []int, budget *int, errs *collector) *node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			errs.add(ErrInvalid, file, 0, "", "file is empty; it should be a hash")
			return nil
		}
		line := 0
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "yaml: ")
		if strings.HasPrefix(msg, "line ") {
			rest := msg[len("line "):]
			if i := strings.Index(rest, ":"); i > 0 {
				if v, err := strconv.Atoi(rest[:i]); err == nil {
					line = v
					msg = strings.TrimSpace(rest[i+1:])
				}
			}
		}
		p := &parser{lines: lines}
		errs.add(ErrSyntax, file, p.srcLine(line), "", "invalid YAML: %s", msg)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p := &parser{lines: lines}
		errs.add(ErrSyntax, file, p.srcLine(extra.Line), "", "invalid YAML: more than one document")
		return nil
	}
	p := &parser{file: file, budget: *budget, errs: errs, lines: lines}
	n, err := p.convert(&doc, 0)
	*budget = p.budget
	if err != nil {
		if errors.Is(err, errBudget) {
			errs.add(ErrTooLarge, file, 0, "", "YAML expands to more than %d nodes (alias bomb?)", maxNodes)
		} else {
			errs.add(ErrSyntax, file, 0, "", "invalid YAML: %v", err)
		}
		return nil
	}
	return n
}

func (p *parser) convert(y *yaml.Node, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nesting deeper than %d levels (recursive alias?)", maxDepth)
	}
	p.budget--
	if p.budget < 0 {
		return nil, errBudget
	}
	line := p.srcLine(y.Line)
	switch y.Kind {
	case yaml.DocumentNode:
		if len(y.Content) == 0 {
			return &node{kind: nullNode, file: p.file, line: line}, nil
		}
		return p.convert(y.Content[0], depth+1)
	case yaml.AliasNode:
		if y.Alias == nil {
			return nil, fmt.Errorf("line %d: unknown alias", line)
		}
		return p.convert(y.Alias, depth+1)
	case yaml.ScalarNode:
		return p.scalar(y, line), nil
	case yaml.SequenceNode:
		n := &node{kind: seqNode, file: p.file, line: line}
		for _, c := range y.Content {
			v, err := p.convert(c, depth+1)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, v)
		}
		return n, nil
	case yaml.MappingNode:
		n := &node{kind: mapNode, file: p.file, line: line}
		var merges []*node
		for i := 0; i+1 < len(y.Content); i += 2 {
			k, v := y.Content[i], y.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				m, err := p.convert(v, depth+1)
				if err != nil {
					return nil, err
				}
				switch {
				case m.isMap():
					merges = append(merges, m)
				case m.isSeq():
					for _, it := range m.items {
						if !it.isMap() {
							return nil, fmt.Errorf("line %d: merge key << needs a hash or a list of hashes", p.srcLine(k.Line))
						}
						merges = append(merges, it)
					}
				default:
					return nil, fmt.Errorf("line %d: merge key << needs a hash or a list of hashes", p.srcLine(k.Line))
				}
				continue
			}
			if k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: only scalar keys are supported", p.srcLine(k.Line))
			}
			val, err := p.convert(v, depth+1)
			if err != nil {
				return nil, err
			}
			// Ruby's Hash keeps the last duplicate; so do we.
			n.set(k.Value, val, p.file, p.srcLine(k.Line))
		}
		// Explicit keys win over merged ones; earlier merge sources win over later.
		for _, m := range merges {
			for i, k := range m.keys {
				if !n.has(k) {
					n.set(k, m.vals[i].clone(), m.kfiles[i], m.klines[i])
					p.budget -= 1
				}
			}
		}
		if p.budget < 0 {
			return nil, errBudget
		}
		return n, nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", line)
}

// yaml11Bools are the plain scalars Ruby's Psych (YAML 1.1) reads as booleans.
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true, "on": true, "On": true, "ON": true,
	"n": false, "N": false, "no": false, "No": false, "NO": false, "off": false, "Off": false, "OFF": false,
}

func (p *parser) scalar(y *yaml.Node, line int) *node {
	n := &node{kind: scalarNode, value: y.Value, file: p.file, line: line, tag: "str"}
	plain := y.Style&(yaml.TaggedStyle|yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0
	switch y.ShortTag() {
	case "!!null":
		n.kind, n.value, n.tag = nullNode, "", ""
	case "!!int":
		n.tag = "int"
	case "!!float":
		n.tag = "float"
	case "!!bool":
		n.tag = "bool"
	default:
		if plain {
			if _, ok := yaml11Bools[y.Value]; ok && y.Value != "y" && y.Value != "Y" && y.Value != "n" && y.Value != "N" {
				n.tag = "bool"
			}
		}
	}
	return n
}

// encodeYAML writes n as YAML. redact is applied to every scalar value.
func encodeYAML(w io.Writer, n *node, redact func(path, v string) string) error {
	y := toYAML(n, "", redact)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(y); err != nil {
		return err
	}
	return enc.Close()
}

func toYAML(n *node, path string, redact func(path, v string) string) *yaml.Node {
	switch {
	case n.isNull():
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	case n.isScalar():
		v := n.value
		if redact != nil {
			v = redact(path, v)
		}
		tag := "!!str"
		if v == n.value {
			switch n.tag {
			case "int":
				tag = "!!int"
			case "float":
				tag = "!!float"
			case "bool":
				tag = "!!bool"
			}
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v}
	case n.isSeq():
		y := &yaml.Node{Kind: yaml.SequenceNode}
		for i, it := range n.items {
			y.Content = append(y.Content, toYAML(it, fmt.Sprintf("%s[%d]", path, i), redact))
		}
		return y
	default:
		y := &yaml.Node{Kind: yaml.MappingNode}
		for i, k := range n.keys {
			y.Content = append(y.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, toYAML(n.vals[i], joinPath(path, k), redact))
		}
		return y
	}
}

// joinPath appends key k to a dotted key path.
func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func indexPath(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }
