package kamal

import (
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Command is one command to run on a host. Argv is what an executor runs,
// never interpreted by a shell, after Expand has put the SSH user's login
// directory in the arguments that name a path under it.
// String renders the line the way Kamal prints it, quoting included, which
// is what the golden tests compare with Kamal's own output.
type Command struct {
	Argv  []string
	style []quoteStyle
}

type quoteStyle uint8

const (
	plain     quoteStyle = iota // as is
	quoteAll                    // "value"
	quoteTail                   // key="value" (or bare key)
	shellWord                   // POSIX single-quote if needed
	homePath                    // as is; a leading HomePrefix is expanded by Expand
)

// HomePrefix starts arguments that are paths relative to the SSH user's
// login directory (Kamal writes them as $PWD/…, expanded by the remote
// shell). Executors that do not run through a shell use ExpandHome.
const HomePrefix = "$PWD/"

// ExpandHome returns paths with a leading HomePrefix replaced by home +
// "/" (Container.Directories, FileUpload.Remote). A HomePrefix anywhere
// else is left alone. For a Command use Command.Expand, which knows which
// arguments capstan made relative to the login directory.
func ExpandHome(paths []string, home string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = expandHome(p, home)
	}
	return out
}

func expandHome(p, home string) string {
	if strings.HasPrefix(p, HomePrefix) {
		return strings.TrimRight(home, "/") + "/" + p[len(HomePrefix):]
	}
	return p
}

// Expand returns the argv to run for an SSH user whose login directory is
// home. Only the arguments that name a path under that directory (a
// volume capstan derives, an accessory directory, or a volume that the
// configuration starts with HomePrefix, which Kamal's remote shell would
// expand) get home in place of HomePrefix; every other argument is
// returned byte for byte, even one that holds "$PWD/" (an env value, a
// label, an option, a cmd word: Kamal quotes those, so no shell expands
// them).
func (c Command) Expand(home string) []string {
	out := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		if i < len(c.style) && c.style[i] == homePath {
			a = expandHome(a, home)
		}
		out[i] = a
	}
	return out
}

type cmdBuilder struct{ c Command }

func newCmd(words ...string) *cmdBuilder {
	b := &cmdBuilder{}
	b.add(plain, words...)
	return b
}

func (b *cmdBuilder) add(s quoteStyle, words ...string) *cmdBuilder {
	for _, w := range words {
		b.c.Argv = append(b.c.Argv, w)
		b.c.style = append(b.c.style, s)
	}
	return b
}

// kv adds flag followed by key="value", the shape of Kamal's argumentize
// for a string value (see pair).
func (b *cmdBuilder) kv(flag, key, value string) *cmdBuilder {
	return b.pair(flag, KV{Key: key, Value: value})
}

// pair adds flag followed by p the way Kamal's argumentize does: the
// boolean false as a bare key=false, a blank value (empty or only white
// space, Ruby's blank?) as the bare key, anything else as key="value"
// escaped like Ruby's String#dump.
func (b *cmdBuilder) pair(flag string, p KV) *cmdBuilder {
	b.add(plain, flag)
	switch {
	case p.isFalse:
		return b.add(plain, p.Key+"=false")
	case blank(p.Value):
		return b.add(plain, p.Key)
	}
	return b.add(quoteTail, p.Key+"="+p.Value)
}

// blank reports whether v is empty or only white space, as ActiveSupport's
// String#blank? (/\A[[:space:]]*\z/, Unicode white space included).
func blank(v string) bool { return strings.TrimFunc(v, unicode.IsSpace) == "" }

// asDocker returns labels with the values Docker ends up with: a blank
// value is passed as the bare key (see KV), which Docker stores as "".
func asDocker(labels []KV) []KV {
	out := make([]KV, len(labels))
	for i, kv := range labels {
		out[i] = kv
		if blank(kv.Value) {
			out[i].Value = ""
		}
	}
	return out
}

// volume adds --volume v, marking v as a path under the login directory
// when it starts with HomePrefix.
func (b *cmdBuilder) volume(v string) *cmdBuilder {
	b.add(plain, "--volume")
	if strings.HasPrefix(v, HomePrefix) {
		return b.add(homePath, v)
	}
	return b.add(plain, v)
}

func (b *cmdBuilder) build() Command { return b.c }

// String renders the command as Kamal prints it.
func (c Command) String() string {
	parts := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		s := plain
		if i < len(c.style) {
			s = c.style[i]
		}
		switch s {
		case quoteAll:
			parts[i] = rubyShellEscape(a)
		case quoteTail:
			if k := strings.IndexByte(a, '='); k >= 0 {
				parts[i] = a[:k+1] + rubyShellEscape(a[k+1:])
			} else {
				parts[i] = a
			}
		case shellWord:
			parts[i] = ShellQuote(a)
		default:
			parts[i] = a
		}
	}
	return strings.Join(parts, " ")
}

// MarshalJSON encodes the argv and the display line.
func (c Command) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Argv []string `json:"argv"`
		Line string   `json:"line"`
	}{c.Argv, c.String()})
}

// rubyShellEscape mimics Kamal's escape_shell_value: ASCII runs are
// Ruby-dumped in double quotes with backticks escaped and "$" escaped
// unless it starts ${…}; non-ASCII runs are kept raw.
func rubyShellEscape(v string) string {
	var out strings.Builder
	i := 0
	for i < len(v) {
		j := i
		ascii := v[i] < utf8.RuneSelf
		for j < len(v) && (v[j] < utf8.RuneSelf) == ascii {
			j++
		}
		part := v[i:j]
		if ascii {
			out.WriteByte('"')
			for k := 0; k < len(part); k++ {
				ch := part[k]
				switch ch {
				case '"':
					out.WriteString(`\"`)
				case '\\':
					out.WriteString(`\\`)
				case '\n':
					out.WriteString(`\n`)
				case '\t':
					out.WriteString(`\t`)
				case '\r':
					out.WriteString(`\r`)
				case '\f':
					out.WriteString(`\f`)
				case '\v':
					out.WriteString(`\v`)
				case '\a':
					out.WriteString(`\a`)
				case '\b':
					out.WriteString(`\b`)
				case 0x1b:
					out.WriteString(`\e`)
				case '`':
					out.WriteString("\\`")
				case '#':
					if k+1 < len(part) && (part[k+1] == '{' || part[k+1] == '$' || part[k+1] == '@') {
						out.WriteString(`\#`)
					} else {
						out.WriteByte('#')
					}
				case '$':
					if k+1 < len(part) && part[k+1] == '{' && strings.IndexByte(part[k+1:], '}') > 0 {
						out.WriteByte('$')
					} else {
						out.WriteString(`\$`)
					}
				default:
					if ch < 0x20 || ch == 0x7f {
						out.WriteString(`\x`)
						out.WriteString(strings.ToUpper(hex2(ch)))
					} else {
						out.WriteByte(ch)
					}
				}
			}
			out.WriteByte('"')
		} else {
			out.WriteString(part)
		}
		i = j
	}
	if v == "" {
		return `""`
	}
	return out.String()
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

// ShellJoin renders argv as one POSIX shell line, each word quoted
// when it needs it (ShellQuote): for people, never run by capstan.
func ShellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = ShellQuote(a)
	}
	return strings.Join(q, " ")
}

// ShellQuote quotes s for a POSIX shell. A leading HomePrefix is left
// unquoted so the remote shell expands it, as in Kamal's output.
func ShellQuote(s string) string {
	if strings.HasPrefix(s, HomePrefix) {
		return `"$PWD"/` + ShellQuote(s[len(HomePrefix):])
	}
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,^", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellLine quotes every argument of argv for a POSIX shell.
func ShellLine(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		parts[i] = ShellQuote(a)
	}
	return strings.Join(parts, " ")
}

// envFileEscape escapes a value for Kamal's env file format: a Ruby string
// dump without the outer quotes, with \" and \# unescaped and non-ASCII
// kept raw.
func envFileEscape(v string) string {
	var out strings.Builder
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case ch >= utf8.RuneSelf:
			out.WriteByte(ch)
		case ch == '\\':
			out.WriteString(`\\`)
		case ch == '\n':
			out.WriteString(`\n`)
		case ch == '\t':
			out.WriteString(`\t`)
		case ch == '\r':
			out.WriteString(`\r`)
		case ch == '\f':
			out.WriteString(`\f`)
		case ch == '\v':
			out.WriteString(`\v`)
		case ch == '\a':
			out.WriteString(`\a`)
		case ch == '\b':
			out.WriteString(`\b`)
		case ch == 0x1b:
			out.WriteString(`\e`)
		case ch < 0x20 || ch == 0x7f:
			out.WriteString(`\x` + strings.ToUpper(hex2(ch)))
		default:
			out.WriteByte(ch)
		}
	}
	return out.String()
}

// splitCmd splits a cmd: string into words like a POSIX shell would,
// refusing syntax that Kamal would hand to the host's shell (pipes,
// variables, command substitution, redirections, lists), because capstan
// runs argv. ok is false with the offending construct.
func splitCmd(s string) (words []string, bad string) {
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\n' && strings.TrimLeft(s[i:], " \t\n") != "":
			return nil, "a line break (a second command)"
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, "unterminated quote"
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '$' || s[i] == '`' {
					return nil, string(s[i])
				}
				if s[i] == '\\' && i+1 < len(s) && s[i+1] == '\n' {
					i++ // line continuation: both go
					continue
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, "unterminated quote"
			}
			inWord = true
		case ch == '\\':
			switch {
			case i+1 == len(s): // a last backslash stays, as in sh
				cur.WriteByte(ch)
			case s[i+1] == '\n': // line continuation: both go
				i++
				continue
			default:
				i++
				cur.WriteByte(s[i])
			}
			inWord = true
		case strings.IndexByte("|&;<>()$`*?[~#", ch) >= 0 && !(ch == '#' && inWord) && !(ch == '~' && inWord):
			if ch == '*' || ch == '?' || ch == '[' {
				// globs are harmless unless they match remote files; keep literal
				cur.WriteByte(ch)
				inWord = true
				continue
			}
			if ch == '#' && !inWord {
				return words, ""
			}
			return nil, string(ch)
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, ""
}
