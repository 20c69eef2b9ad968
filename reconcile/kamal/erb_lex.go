package kamal

import (
	"fmt"
	"strconv"
	"strings"
)

// The tokenizer of the Ruby subset evaluated inside ERB tags (see erb.go
// for the grammar). It knows only the tokens of that subset; anything else
// (symbols, instance variables, regexps, heredocs, %q, ...) is an
// ErrUnsafe error, so the parser never sees a construct it cannot refuse
// with a precise message.

type tokKind int

const (
	tkEOF   tokKind = iota
	tkInt           // num
	tkStr           // parts (a single-quoted string has one literal part)
	tkIdent         // lower-case name or keyword; a method name after "." may end in ? or !
	tkConst         // capitalised name (ENV, File, Time, ...)
	tkCmd           // `...` or %x(...): text is the command
	tkWords         // %w[...]: words
	tkOp            // punctuation: text
)

// token is one token; pos is its byte offset in the tag, space whether
// white space precedes it.
type token struct {
	kind  tokKind
	text  string
	num   int64
	parts []strPart
	words []string
	pos   int
	space bool
}

// strPart is a literal piece of a string or an interpolated #{...}
// expression (toks, ending with tkEOF).
type strPart struct {
	lit  string
	toks []token
}

// Tokenizer limits: interpolations nest at most maxInterpDepth deep.
const maxInterpDepth = 8

// lexer scans src from pos. In an interpolation (interp), an unmatched
// "}" ends the scan.
type lexer struct {
	src    string
	pos    int
	interp bool
	depth  int
	toks   []token
}

// lexERB tokenizes the code of one tag. The token list ends with tkEOF.
func lexERB(code string) ([]token, error) {
	l := &lexer{src: code}
	if err := l.run(); err != nil {
		return nil, err
	}
	return l.toks, nil
}

var twoCharOps = []string{"||", "&&", "==", "!=", "::", "**", "<=", ">=", "=~", "<<", "+=", "-=", "||=", "&&="}

func (l *lexer) run() error {
	braces := 0
	for {
		start := l.pos
		for l.pos < len(l.src) && strings.IndexByte(" \t\r\n", l.src[l.pos]) >= 0 {
			l.pos++
		}
		space := l.pos > start
		if l.pos >= len(l.src) {
			if l.interp {
				return unsafeErr("unterminated #{...} interpolation")
			}
			l.toks = append(l.toks, token{kind: tkEOF, pos: l.pos})
			return nil
		}
		c := l.src[l.pos]
		t := token{pos: l.pos, space: space}
		switch {
		case c == '}' && l.interp && braces == 0:
			l.pos++
			l.toks = append(l.toks, token{kind: tkEOF, pos: l.pos})
			return nil
		case c == '#':
			// A Ruby comment runs to the end of the line.
			for l.pos < len(l.src) && l.src[l.pos] != '\n' {
				l.pos++
			}
			continue
		case isDigit(c):
			j := l.pos
			for j < len(l.src) && (isDigit(l.src[j]) || l.src[j] == '_') {
				j++
			}
			n, err := strconv.ParseInt(strings.ReplaceAll(l.src[l.pos:j], "_", ""), 10, 64)
			if err != nil || (j < len(l.src) && (isIdentByte(l.src[j]) || l.src[j] == '.' && j+1 < len(l.src) && isDigit(l.src[j+1]))) {
				return unsafeErr("unsupported number %q (only decimal integers)", l.src[l.pos:min(j+1, len(l.src))])
			}
			t.kind, t.num, l.pos = tkInt, n, j
		case isIdentStart(c):
			j := l.pos
			for j < len(l.src) && isIdentByte(l.src[j]) {
				j++
			}
			// After ".", a method name may end in ? or ! (empty?, key?).
			if n := len(l.toks); n > 0 && l.toks[n-1].kind == tkOp && l.toks[n-1].text == "." && j < len(l.src) && (l.src[j] == '?' || l.src[j] == '!') && (j+1 >= len(l.src) || l.src[j+1] != '=') {
				j++
			}
			t.text, l.pos = l.src[l.pos:j], j
			t.kind = tkIdent
			if c >= 'A' && c <= 'Z' {
				t.kind = tkConst
			}
		case c == '"' || c == '\'':
			parts, err := l.quoted(c)
			if err != nil {
				return err
			}
			t.kind, t.parts = tkStr, parts
		case c == '`':
			end := strings.IndexByte(l.src[l.pos+1:], '`')
			if end < 0 {
				return unsafeErr("unterminated backtick command")
			}
			t.kind, t.text = tkCmd, l.src[l.pos+1:l.pos+1+end]
			l.pos += end + 2
		case c == '%' && l.pos+2 < len(l.src) && (l.src[l.pos+1] == 'w' || l.src[l.pos+1] == 'x') && isOpenDelim(l.src[l.pos+2]):
			body, err := l.delimited(l.pos + 2)
			if err != nil {
				return err
			}
			if l.src[t.pos+1] == 'w' {
				t.kind, t.words = tkWords, strings.Fields(body)
			} else {
				t.kind, t.text = tkCmd, body
			}
		default:
			op := string(c)
			for _, o := range twoCharOps {
				if strings.HasPrefix(l.src[l.pos:], o) && len(o) > len(op) {
					op = o
				}
			}
			if strings.IndexByte("()[],.?:!=+-*|{};", c) < 0 && len(op) == 1 {
				if c == '%' {
					return unsafeErr("unsupported %% literal %q (only %%w[...] and the commands listed in the documentation)", abbreviate(l.src[l.pos:]))
				}
				return unsafeErr("unsupported character %q", string(c))
			}
			switch c {
			case '{':
				braces++
			case '}':
				braces--
			}
			t.kind, t.text = tkOp, op
			l.pos += len(op)
		}
		l.toks = append(l.toks, t)
	}
}

// quoted scans a string literal opened by q at l.pos. Double quotes
// support the common escapes and #{...} interpolation; single quotes only
// \\ and \'.
func (l *lexer) quoted(q byte) ([]strPart, error) {
	var parts []strPart
	var b strings.Builder
	i := l.pos + 1
	for {
		if i >= len(l.src) {
			return nil, unsafeErr("unterminated string")
		}
		c := l.src[i]
		switch {
		case c == q:
			l.pos = i + 1
			if b.Len() > 0 || len(parts) == 0 {
				parts = append(parts, strPart{lit: b.String()})
			}
			return parts, nil
		case c == '\\' && i+1 < len(l.src):
			e := l.src[i+1]
			i += 2
			if q == '\'' {
				if e != '\\' && e != '\'' {
					b.WriteByte('\\')
				}
				b.WriteByte(e)
				continue
			}
			if r, ok := rubyEscapes[e]; ok {
				b.WriteString(r)
			} else {
				b.WriteByte(e) // "\q" is "q" in Ruby
			}
		case c == '#' && q == '"' && i+1 < len(l.src) && l.src[i+1] == '{':
			if l.depth >= maxInterpDepth {
				return nil, unsafeErr("interpolations nested deeper than %d", maxInterpDepth)
			}
			if b.Len() > 0 {
				parts = append(parts, strPart{lit: b.String()})
				b.Reset()
			}
			sub := &lexer{src: l.src, pos: i + 2, interp: true, depth: l.depth + 1}
			if err := sub.run(); err != nil {
				return nil, err
			}
			parts = append(parts, strPart{toks: sub.toks})
			i = sub.pos
		default:
			b.WriteByte(c)
			i++
		}
	}
}

var rubyEscapes = map[byte]string{'n': "\n", 't': "\t", 'r': "\r", '0': "\x00", 's': " ", 'e': "\x1b", 'a': "\a", 'b': "\b", 'f': "\f", 'v': "\v", '\\': "\\", '"': "\"", '#': "#"}

// delimited scans a %w / %x body whose opening delimiter is at open,
// honouring nested pairs; it returns the body.
func (l *lexer) delimited(open int) (string, error) {
	o := l.src[open]
	cl := map[byte]byte{'(': ')', '[': ']', '{': '}', '<': '>', '|': '|', '!': '!', '/': '/'}[o]
	depth := 0
	for i := open + 1; i < len(l.src); i++ {
		switch l.src[i] {
		case '\\':
			i++
		case cl:
			if depth == 0 {
				l.pos = i + 1
				return l.src[open+1 : i], nil
			}
			depth--
		case o:
			if o != cl {
				depth++
			}
		}
	}
	return "", unsafeErr("unterminated %%%c literal", l.src[open-1])
}

func isOpenDelim(c byte) bool  { return strings.IndexByte("([{<|!/", c) >= 0 }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentByte(c byte) bool  { return isIdentStart(c) || isDigit(c) }

// evalError is a failed tag: Kind is the sentinel (ErrUnsafe for code
// capstan refuses, ErrInvalid for a Ruby error such as ENV.fetch of an
// unset variable), Msg the message with its hint.
type evalError struct {
	Kind error
	Msg  string
}

func (e *evalError) Error() string { return e.Msg }

func unsafeErr(format string, args ...any) *evalError {
	return &evalError{Kind: ErrUnsafe, Msg: fmt.Sprintf(format, args...)}
}

func syntaxErr(format string, args ...any) *evalError {
	return &evalError{Kind: ErrSyntax, Msg: fmt.Sprintf(format, args...)}
}

func rubyErr(format string, args ...any) *evalError {
	return &evalError{Kind: ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}
