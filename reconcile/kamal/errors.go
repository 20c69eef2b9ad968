package kamal

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors. Every *Error wraps exactly one of them, so callers can
// classify a failure with errors.Is without parsing messages.
var (
	// ErrInvalid marks a configuration Kamal itself would reject (unknown
	// key, wrong type, failed cross-field rule).
	ErrInvalid = errors.New("invalid configuration")
	// ErrSyntax marks a file that is not valid YAML, or ERB whose tags are
	// not closed or not balanced (an if without end).
	ErrSyntax = errors.New("syntax error")
	// ErrUnsafe marks content capstan will never evaluate: Ruby code in ERB
	// outside the supported subset (programs, require, other constants and
	// methods) and $(command) substitution in secrets files when the operator has not
	// enabled it.
	ErrUnsafe = errors.New("refused to evaluate code")
	// ErrTooLarge marks a file over MaxFileSize or a YAML document whose
	// alias expansion exceeds the node budget (an "alias bomb").
	ErrTooLarge = errors.New("input too large")
	// ErrSecret marks a secret that is referenced but cannot be resolved.
	ErrSecret = errors.New("secret not available")
	// ErrMissingFile marks a configuration file that does not exist.
	ErrMissingFile = errors.New("file not found")
	// ErrVersion marks a missing or malformed version.
	ErrVersion = errors.New("invalid version")
)

// Error is one problem found while loading a configuration. It prints as
// "FILE:LINE: key.path: message"; File, Line and Path are omitted when
// unknown. Message never contains a secret value.
type Error struct {
	File string // path relative to the repository root, e.g. "config/deploy.yml"
	Line int    // 1-based line, 0 when unknown
	Path string // key path, e.g. "servers.web.hosts[1]"; empty for file-level errors
	Msg  string
	Kind error // one of the ErrX sentinels
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(safePath(e.Path))
		b.WriteString(": ")
	}
	b.WriteString(oneLine(e.Msg))
	return b.String()
}

// safePath returns a key path fit for one line of a log: quoted (Go
// syntax) when a key in it holds a control character, a quote or invalid
// UTF-8, so a hostile key cannot forge further error lines.
func safePath(p string) string {
	for _, r := range p {
		if r == utf8.RuneError || r == '"' || unicode.IsControl(r) {
			return strconv.Quote(p)
		}
	}
	return p
}

// oneLine escapes control characters and invalid UTF-8 in a message (which
// may quote a hostile name) the way Go quotes strings, so an error stays on
// one line.
func oneLine(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			q := strconv.Quote(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// Unwrap returns the sentinel classifying e.
func (e *Error) Unwrap() error { return e.Kind }

// Errors is the list of every problem found by Load, sorted by file and
// line. Its Error method joins the lines with newlines. errors.Is and
// errors.As see through it to each *Error.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is / errors.As inspect every element.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Lines returns each error formatted on its own line.
func (es Errors) Lines() []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Error()
	}
	return out
}

// collector accumulates errors during a load.
type collector struct {
	errs  Errors
	seen  map[string]bool
	muted map[string]bool // "file:line" of failed ERB tags
}

// mute drops the errors added later at file:line: a failed ERB tag
// rendered as "" there, so what the structural checks find on that line
// is a consequence of the reported ERB error.
func (c *collector) mute(file string, line int) {
	if c.muted == nil {
		c.muted = map[string]bool{}
	}
	c.muted[fmt.Sprintf("%s:%d", file, line)] = true
}

func (c *collector) add(kind error, file string, line int, path, format string, args ...any) {
	if c.muted[fmt.Sprintf("%s:%d", file, line)] {
		return
	}
	e := &Error{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...), Kind: kind}
	s := e.Error()
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[s] {
		return
	}
	c.seen[s] = true
	c.errs = append(c.errs, e)
}

// at records an error located at node n.
func (c *collector) at(kind error, n *node, path, format string, args ...any) {
	file, line := "", 0
	if n != nil {
		file, line = n.file, n.line
	}
	c.add(kind, file, line, path, format, args...)
}

func (c *collector) result() error {
	if len(c.errs) == 0 {
		return nil
	}
	sort.SliceStable(c.errs, func(i, j int) bool {
		a, b := c.errs[i], c.errs[j]
		if a.File != b.File {
			return fileRank(a.File) < fileRank(b.File) || (fileRank(a.File) == fileRank(b.File) && a.File < b.File)
		}
		return a.Line < b.Line
	})
	return c.errs
}

// fileRank orders errors without a file first, then config files, then
// secrets files.
func fileRank(f string) int {
	switch {
	case f == "":
		return 0
	case strings.Contains(f, ".kamal/"):
		return 2
	default:
		return 1
	}
}
