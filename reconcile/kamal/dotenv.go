package kamal

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// This file ports the parser Kamal reads .kamal/secrets* with: Ruby's
// dotenv 3.2 (Dotenv::Parser, Dotenv::Substitutions::Variable), with
// Kamal's Secrets::Dotenv::InlineCommandSubstitution installed in place of
// dotenv's command substitution. The passes below are the gem's, in its
// order; dotenv_test.go holds the table of rules they implement. What
// capstan does differently (refusing a value that uses an unset variable
// or a command it may not run, instead of substituting "") is decided by
// the evaluator in secrets.go, not here.

// rubySpace is Ruby's \s.
const rubySpace = `[ \t\r\n\f\v]`

// reDotenvLine is Dotenv::Parser::LINE. It has no backreference or
// lookaround, and Go's leftmost-first matching picks the match Ruby's
// backtracking engine picks, so String#scan and FindAll agree. Groups:
// 1 export, 2 key, 3 value (absent when there is no separator or value).
var reDotenvLine = regexp.MustCompile(`(?m)(?:^|\A)` + rubySpace + `*(export` + rubySpace + `+)?([A-Za-z0-9_.]+)` +
	`(?:(?:` + rubySpace + `*=` + rubySpace + `*?|:` + rubySpace + `+?)` +
	`(` + rubySpace + `*'(?:\\'|[^'])*'|` + rubySpace + `*"(?:\\"|[^"])*"|[^#\n]+)?)?` +
	rubySpace + `*(?:#.*)?(?:$|\z)`)

// dotenvLine is one match of reDotenvLine.
type dotenvLine struct {
	key      string
	raw      string // the value as matched, quotes included
	hasValue bool   // a separator and value were present
	export   bool
	line     int // 1-based line of the key
}

// scanDotenv splits a secrets file into its matches, as the gem's
// Environment#read and Parser#call do: a leading UTF-8 byte order mark is
// dropped, \r\n and \r become \n, and text matching no line is ignored.
// ok is false when the text is not UTF-8 (Ruby's regexp raises on it).
func scanDotenv(text string) (lines []dotenvLine, ok bool) {
	text = strings.TrimPrefix(text, "\ufeff")
	if !utf8.ValidString(text) {
		return nil, false
	}
	text = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(text)
	lineNo, counted := 1, 0
	for _, m := range reDotenvLine.FindAllStringSubmatchIndex(text, -1) {
		lineNo += strings.Count(text[counted:m[4]], "\n")
		counted = m[4]
		l := dotenvLine{key: text[m[4]:m[5]], export: m[2] >= 0, line: lineNo}
		if m[6] >= 0 {
			l.raw, l.hasValue = text[m[6]:m[7]], true
		}
		lines = append(lines, l)
	}
	return lines, true
}

// unquoteDotenv is the first step of Parser#parse_value: strip, then drop
// a pair of surrounding quotes of one kind (QUOTED_STRING). quote is the
// quote removed, 0 for none.
func unquoteDotenv(v string) (string, byte) {
	v = strings.Trim(v, "\x00\t\n\v\f\r ")
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1], v[0]
	}
	return v, 0
}

// expandNewlines is Parser#expand_newlines for a double-quoted value. By
// default \n and \r keep their backslash (doubled here, so that the
// unescape pass leaves one); DOTENV_LINEBREAK_MODE=legacy turns them into
// a line feed and a carriage return.
func expandNewlines(v string, legacy bool) string {
	if legacy {
		return strings.ReplaceAll(strings.ReplaceAll(v, `\n`, "\n"), `\r`, "\r")
	}
	return strings.ReplaceAll(strings.ReplaceAll(v, `\n`, `\\n`), `\r`, `\\r`)
}

// unescapeDotenv is Parser#unescape_characters, gsub(/\\([^$])/, '\1'):
// a backslash is dropped before any character but "$".
func unescapeDotenv(v string) string {
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && v[i+1] != '$' {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// chomp is Ruby's String#chomp: one trailing \r\n, \n or \r removed.
func chomp(s string) string {
	switch {
	case strings.HasSuffix(s, "\r\n"):
		return s[:len(s)-2]
	case strings.HasSuffix(s, "\n"), strings.HasSuffix(s, "\r"):
		return s[:len(s)-1]
	}
	return s
}

// dotenvMatch is one match of a substitution pattern in a value.
type dotenvMatch struct {
	start, end int
	escaped    bool   // led by a backslash: kept literally, minus the backslash
	name       string // variables: the name, "" when none followed the $
}

// body returns the command of a command match, without "$(" and ")".
func (m dotenvMatch) body(v string) string { return v[m.start+2 : m.end-1] }

// scanVariables finds the matches of Substitutions::Variable::VARIABLE,
// /(\\)?(\$)(?!\()\{?([A-Z0-9_]+)?\}?/i, left to right as gsub does. The
// braces need not balance: ${A, $A} and ${A} all name A.
func scanVariables(v string) []dotenvMatch {
	var out []dotenvMatch
	for i := 0; i < len(v); i++ {
		start, escaped := i, false
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == '$' {
			escaped = true
			i++
		}
		if v[i] != '$' || (i+1 < len(v) && v[i+1] == '(') {
			i = start // \$( and $( are never variables
			continue
		}
		j := i + 1
		if j < len(v) && v[j] == '{' {
			j++
		}
		k := j
		for k < len(v) && isVarChar(v[k]) {
			k++
		}
		m := dotenvMatch{start: start, escaped: escaped, name: v[j:k]}
		if k < len(v) && v[k] == '}' {
			k++
		}
		m.end = k
		out = append(out, m)
		i = k - 1
	}
	return out
}

func isVarChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'
}

// scanCommands finds the matches of Kamal's
// InlineCommandSubstitution::INTERPOLATED_SHELL_COMMAND,
// /(\\)?\$(\((?:\\.|[^()\\]|\g<cmd>)+\))/: "$(" with a non-empty body of
// escaped characters, other characters and nested non-empty balanced
// parentheses, then ")". An unbalanced "$(" is left as text.
func scanCommands(v string) []dotenvMatch {
	var out []dotenvMatch
	for i := 0; i < len(v); i++ {
		start, escaped := i, false
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == '$' {
			escaped = true
			i++
		}
		if v[i] != '$' || i+1 >= len(v) || v[i+1] != '(' {
			i = start
			continue
		}
		end, ok := commandEnd(v, i+1)
		if !ok {
			i = start
			continue
		}
		out = append(out, dotenvMatch{start: start, end: end, escaped: escaped})
		i = end - 1
	}
	return out
}

// commandEnd matches the group (\((?:\\.|[^()\\]|\g<cmd>)+\)) at v[open]
// == '(' and returns the index after its ")". The alternatives start with
// different characters, so the match is found without backtracking.
func commandEnd(v string, open int) (int, bool) {
	counts := []int{0} // items matched in each open group
	for j := open + 1; j < len(v); j++ {
		top := len(counts) - 1
		switch v[j] {
		case ')':
			if counts[top] == 0 {
				return 0, false // an empty group
			}
			counts = counts[:top]
			if len(counts) == 0 {
				return j + 1, true
			}
			counts[len(counts)-1]++
		case '(':
			counts = append(counts, 0)
		case '\\':
			if j+1 >= len(v) || v[j+1] == '\n' { // . does not match a newline
				return 0, false
			}
			j++
			counts[top]++
		default:
			counts[top]++
		}
	}
	return 0, false
}
