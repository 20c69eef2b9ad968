package kamal

import (
	"errors"
	"strings"
)

// ERB support. Kamal renders each config file with Ruby's ERB before
// parsing it. capstan never runs code found in a repository: it evaluates
// a small Ruby subset with its own interpreter (erb_lex.go tokens,
// erb_parse.go grammar, erb_eval.go evaluation, erb_value.go values and
// the method table, erb_sources.go files, revision and time), whose
// grammar is summed up in the README ("ERB in deploy.yml"):
//
//	<%= expr %>                      the value's to_s (nil prints nothing)
//	<% name = expr %>                a local variable
//	<% if c %> <% elsif c %> <% else %> <% end %>, <% unless c %>
//	<% LIST.each do |x| %> ... <% end %>
//	<%# comment %>, <%% (a literal "<%"), <%- and -%> trimming
//
// Expressions read ENV, files of the repository (File.read), the revision
// being deployed (a few git commands, answered without running git) and
// its commit time (Time.now, `date ...`). Anything else is an ErrUnsafe
// error naming the file and line. A failed tag renders as "" so that the
// rest of the file is still checked; the load fails all the same. On a
// line that is a YAML comment ("# ... <%= %>") a tag that fails renders
// "" silently: its output would be a comment either way.

// Template limits.
const maxTemplateDepth = 32

// segment is a piece of the source: text, or a tag with its code.
type segment struct {
	kind    byte // 't' text, '=' output, 'c' code, '#' comment
	s       string
	line    int  // source line where it starts
	lenient bool // an output tag on a YAML comment line
}

// tnode is a node of the template tree.
type tnode struct {
	seg      segment
	e        expr  // output, statement, each list
	err      error // parse error of the tag
	branches []branch
	elseBody []*tnode
	inElse   bool
	name     string // each: the block variable
	body     []*tnode
	head     string // "if", "each", "block" or ""
}

type branch struct {
	cond   expr
	err    error
	unless bool
	line   int
	code   string
	body   []*tnode
}

// scanERB splits src into segments, applying "-" trimming. A tag that is
// not closed is an error; the text before it is kept.
func scanERB(src string) ([]segment, *templateError) {
	var segs []segment
	line := 1
	i := 0
	for i < len(src) {
		j := strings.Index(src[i:], "<%")
		if j < 0 {
			segs = append(segs, segment{kind: 't', s: src[i:], line: line})
			break
		}
		text := src[i : i+j]
		if strings.HasPrefix(src[i+j:], "<%%") {
			segs = append(segs, segment{kind: 't', s: text + "<%", line: line})
			line += strings.Count(text, "\n")
			i += j + 3
			continue
		}
		tagLine := line + strings.Count(text, "\n")
		lineStart := strings.LastIndexByte(src[:i+j], '\n') + 1
		prefix := strings.TrimLeft(src[lineStart:i+j], " \t")
		lenient := strings.HasPrefix(prefix, "#")
		leftTrim := strings.HasPrefix(src[i+j:], "<%-")
		if leftTrim {
			// Drop spaces and tabs between the start of the line and the tag.
			k := strings.LastIndexByte(text, '\n')
			if strings.Trim(text[k+1:], " \t") == "" {
				text = text[:k+1]
			}
		}
		segs = append(segs, segment{kind: 't', s: text, line: line})
		i += j
		end := strings.Index(src[i+2:], "%>") // "<%>" does not close itself
		if end >= 0 {
			end += 2
		}
		if end < 0 {
			return segs, &templateError{tagLine, &evalError{Kind: ErrSyntax, Msg: "ERB tag is not closed with %>"}}
		}
		tag := src[i+2 : i+end]
		if leftTrim && tag != "" {
			tag = tag[1:]
		}
		rightTrim := strings.HasSuffix(tag, "-")
		if rightTrim {
			tag = tag[:len(tag)-1]
		}
		line = tagLine + strings.Count(src[i:i+end], "\n")
		i += end + 2
		if rightTrim && strings.HasPrefix(src[i:], "\n") {
			i++
			line++
		}
		seg := segment{kind: 'c', s: tag, line: tagLine}
		switch {
		case strings.HasPrefix(tag, "#"):
			seg.kind = '#'
		case strings.HasPrefix(tag, "="):
			seg.kind, seg.s, seg.lenient = '=', tag[1:], lenient
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// templateError is an error of the template structure at a line.
type templateError struct {
	line int
	err  error
}

// buildTemplate turns segments into a tree. Structure errors (an end
// without if, an if without end) are returned; the tree is still usable.
func buildTemplate(segs []segment) ([]*tnode, []templateError) {
	var errs []templateError
	root := &tnode{}
	stack := []*tnode{root}
	add := func(n *tnode) {
		top := stack[len(stack)-1]
		switch {
		case top.head == "if" && top.inElse:
			top.elseBody = append(top.elseBody, n)
		case top.head == "if":
			b := &top.branches[len(top.branches)-1]
			b.body = append(b.body, n)
		default:
			top.body = append(top.body, n)
		}
	}
	push := func(n *tnode) {
		if len(stack) > maxTemplateDepth && n.err == nil {
			n.err = unsafeErr("if/each blocks nested deeper than %d levels", maxTemplateDepth)
		}
		add(n)
		stack = append(stack, n)
	}
	for _, seg := range segs {
		switch seg.kind {
		case 't':
			if seg.s != "" {
				add(&tnode{seg: seg})
			}
			continue
		case '#':
			continue
		case '=':
			n := &tnode{seg: seg}
			if strings.TrimSpace(seg.s) == "" {
				n.err = unsafeErr("empty output tag")
			} else {
				n.e, n.err = parseExpr(seg.s)
			}
			add(n)
			continue
		}
		head, code, name := tagHead(seg.s)
		top := stack[len(stack)-1]
		switch head {
		case "if", "unless":
			cond, err := parseExpr(code)
			push(&tnode{seg: seg, head: "if", branches: []branch{{cond: cond, err: err, unless: head == "unless", line: seg.line, code: code}}})
		case "elsif":
			if top.head != "if" || top.inElse || top.branches[0].unless {
				errs = append(errs, templateError{seg.line, syntaxErr("elsif without a matching if")})
				continue
			}
			cond, err := parseExpr(code)
			top.branches = append(top.branches, branch{cond: cond, err: err, line: seg.line, code: code})
		case "else":
			if top.head != "if" || top.inElse {
				errs = append(errs, templateError{seg.line, syntaxErr("else without a matching if")})
				continue
			}
			top.inElse = true
		case "end":
			if len(stack) == 1 {
				errs = append(errs, templateError{seg.line, syntaxErr("end without a matching if or each")})
				continue
			}
			stack = stack[:len(stack)-1]
		case "each":
			n := &tnode{seg: seg, head: "each", name: name}
			n.e, n.err = parseExpr(code)
			push(n)
		default:
			n := &tnode{seg: seg}
			if isBlockOpener(code) {
				// An unsupported block (ENV.each do |k, v|, 3.times do):
				// refused, and its body skipped up to its end.
				n.head = "block"
				n.err = unsafeErr("only LIST.each do |x| blocks over a literal list are supported: %s", hintRuby)
				push(n)
				continue
			}
			if strings.TrimSpace(code) != "" {
				n.e, n.err = parseExpr(code)
				add(n)
			}
		}
	}
	for len(stack) > 1 {
		n := stack[len(stack)-1]
		errs = append(errs, templateError{n.seg.line, syntaxErr("%s block is not closed with <%% end %%>", n.head)})
		stack = stack[:len(stack)-1]
	}
	return root.body, errs
}

// tagHead classifies a statement tag's code: "if", "elsif", "unless",
// "else", "end", "each" (code is then the list expression and name the
// block variable) or "" for a plain statement.
func tagHead(code string) (head, rest, name string) {
	s := strings.TrimSpace(code)
	k := 0
	for k < len(s) && isIdentByte(s[k]) {
		k++
	}
	word, after := s[:k], s[k:]
	switch word {
	case "if", "elsif", "unless":
		return word, strings.TrimSuffix(strings.TrimSpace(after), " then"), ""
	case "else", "end":
		if a := strings.TrimSpace(after); a == "" || strings.HasPrefix(a, "#") {
			return word, "", ""
		}
	}
	// LIST.each do |x|
	if i := strings.LastIndex(s, ".each"); i > 0 {
		tail := strings.TrimSpace(s[i+len(".each"):])
		if body, ok := strings.CutPrefix(tail, "do"); ok {
			body = strings.TrimSpace(body)
			if strings.HasPrefix(body, "|") && strings.HasSuffix(body, "|") && len(body) > 2 {
				v := strings.TrimSpace(body[1 : len(body)-1])
				if v != "" && isIdentStart(v[0]) && strings.IndexFunc(v, func(r rune) bool { return !(r < 128 && isIdentByte(byte(r))) }) < 0 {
					return "each", s[:i], v
				}
			}
		}
	}
	return "", s, ""
}

func isBlockOpener(code string) bool {
	s := strings.TrimSpace(code)
	if strings.HasSuffix(s, " do") || strings.HasSuffix(s, "{") {
		return true
	}
	if strings.HasSuffix(s, "|") {
		i := strings.Index(s, "|")
		return i > 0 && (strings.HasSuffix(strings.TrimSpace(s[:i]), " do") || strings.HasSuffix(strings.TrimSpace(s[:i]), "{"))
	}
	return false
}

// renderer executes a template into out, keeping for each output line
// the source line it came from.
type renderer struct {
	file    string
	ev      *evaluator
	errs    *collector
	out     strings.Builder
	lines   []int
	pending bool         // the last output line has no content yet
	failed  map[int]bool // source lines with a failed tag
	stopped bool         // a limit was hit: output is abandoned
}

// renderERB renders src. It returns the output and, for each output line,
// the source line it came from (nil when src has no tag); ok is false
// when a limit stopped the rendering (there is no output to check). Errors are
// added to errs; the output is still returned (failed tags render as "")
// so that the caller can check the rest of the file. The source lines of
// failed tags are muted in errs: errors the structural checks find there
// are consequences of the failed tag.
func renderERB(file, src string, ctx *erbContext, errs *collector) (string, []int, bool) {
	if !strings.Contains(src, "<%") {
		return src, nil, true
	}
	r := &renderer{file: file, errs: errs, ev: &evaluator{ctx: ctx, scopes: []map[string]any{{}}}, lines: []int{1}, failed: map[int]bool{}}
	segs, serr := scanERB(src)
	if serr != nil {
		r.fail(segment{line: serr.line}, serr.err)
	}
	nodes, terrs := buildTemplate(segs)
	for _, te := range terrs {
		r.fail(segment{line: te.line}, te.err)
	}
	r.exec(nodes)
	for l := range r.failed {
		errs.mute(file, l)
	}
	if r.stopped {
		return "", nil, false
	}
	return r.out.String(), r.lines, true
}

// fail records the error of a tag (not for a lenient tag).
func (r *renderer) fail(seg segment, err error) {
	if seg.lenient {
		return
	}
	var ee *evalError
	kind, msg := ErrUnsafe, err.Error()
	if errors.As(err, &ee) {
		kind = ee.Kind
	}
	if kind == ErrUnsafe && !strings.Contains(msg, "capstan") {
		msg += "; " + hintRuby
	}
	code := strings.TrimSpace(seg.s)
	if code != "" {
		r.errs.add(kind, r.file, seg.line, "", "ERB %q: %s", abbreviate(code), msg)
	} else {
		r.errs.add(kind, r.file, seg.line, "", "ERB: %s", msg)
	}
	r.failed[seg.line] = true
	if errors.Is(kind, ErrTooLarge) {
		r.stopped = true
	}
}

// emit writes s; newlines in it map to line.
func (r *renderer) emit(s string, line int, text bool) {
	if r.out.Len()+len(s) > MaxFileSize {
		r.fail(segment{line: line}, &evalError{Kind: ErrTooLarge, Msg: "ERB output is larger than 1 MiB"})
		return
	}
	// An output line maps to the source line of its first content.
	for k := 0; k < len(s); k++ {
		if r.pending {
			r.lines[len(r.lines)-1] = line
			r.pending = false
		}
		if s[k] == '\n' {
			if text {
				line++
			}
			r.lines = append(r.lines, line)
			r.pending = true
		}
	}
	r.out.WriteString(s)
}

func (r *renderer) exec(nodes []*tnode) {
	for _, n := range nodes {
		if r.stopped {
			return
		}
		switch {
		case n.seg.kind == 't':
			r.emit(n.seg.s, n.seg.line, true)
		case n.err != nil:
			r.fail(n.seg, n.err)
		case n.head == "if":
			r.execIf(n)
		case n.head == "each":
			r.execEach(n)
		case n.e != nil:
			v, err := r.ev.eval(n.e)
			if err != nil {
				r.fail(n.seg, err)
				continue
			}
			if n.seg.kind == '=' {
				r.emit(toS(v), n.seg.line, false)
			}
		}
	}
}

// execIf runs the first branch whose condition holds, else the else
// body. A condition that fails is reported and counts as false.
func (r *renderer) execIf(n *tnode) {
	for _, b := range n.branches {
		seg := segment{s: b.code, line: b.line}
		if b.err != nil {
			r.fail(seg, b.err)
			continue
		}
		v, err := r.ev.eval(b.cond)
		if err != nil {
			r.fail(seg, err)
			continue
		}
		if truthy(v) != b.unless {
			r.exec(b.body)
			return
		}
	}
	r.exec(n.elseBody)
}

func (r *renderer) execEach(n *tnode) {
	v, err := r.ev.eval(n.e)
	if err != nil {
		r.fail(n.seg, err)
		return
	}
	list, ok := v.([]any)
	if !ok {
		r.fail(n.seg, rubyErr("each needs an array (found %s)", rubyType(v)))
		return
	}
	for _, it := range list {
		r.ev.iters++
		if r.ev.iters > maxLoopIterations {
			r.fail(n.seg, &evalError{Kind: ErrTooLarge, Msg: "each loops run more than 10000 iterations"})
			return
		}
		r.ev.scopes = append(r.ev.scopes, map[string]any{n.name: it})
		r.exec(n.body)
		r.ev.scopes = r.ev.scopes[:len(r.ev.scopes)-1]
		if r.stopped {
			return
		}
	}
}

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
