package kamal

import (
	"regexp"
	"strings"
)

// ERB support. Kamal renders each config file with Ruby's ERB before
// parsing it. capstan never runs code found in a repository, so it
// implements only the forms real configs use to read the environment:
//
//	<%= ENV["X"] %>                 value of X, empty when unset
//	<%= ENV.fetch("X") %>           value of X, an error when unset
//	<%= ENV.fetch("X", "default") %> value of X, or "default"
//	<%# comment %>                  nothing
//	<%%                             a literal "<%"
//
// Single or double quotes are accepted around names and defaults, and the
// "-" trim markers (<%- and -%>) behave as with trim_mode "-". Any other
// tag (backticks, %x(), method calls, control flow) is an ErrUnsafe error
// naming the file and line.

var (
	erbIndex = regexp.MustCompile(`^ENV\[\s*("[^"\\]*"|'[^'\\]*')\s*\]$`)
	erbFetch = regexp.MustCompile(`^ENV\.fetch\(\s*("[^"\\]*"|'[^'\\]*')\s*(?:,\s*("[^"\\]*"|'[^'\\]*')\s*)?\)$`)
)

// renderERB renders src. getenv looks up ENV. It returns the output and,
// for each output line, the source line it came from.
func renderERB(file string, src string, getenv func(string) (string, bool), errs *collector) (string, []int, bool) {
	if !strings.Contains(src, "<%") {
		return src, nil, true
	}
	var out strings.Builder
	var lines []int
	srcLine := 1
	lines = append(lines, 1)
	ok := true
	emit := func(s string, line int) {
		for _, r := range s {
			out.WriteRune(r)
			if r == '\n' {
				lines = append(lines, line)
			}
		}
	}
	// emitText emits literal source text, tracking source lines.
	emitText := func(s string) {
		for _, r := range s {
			out.WriteRune(r)
			if r == '\n' {
				srcLine++
				lines = append(lines, srcLine)
			}
		}
	}
	i := 0
	for i < len(src) {
		j := strings.Index(src[i:], "<%")
		if j < 0 {
			emitText(src[i:])
			break
		}
		text := src[i : i+j]
		i += j
		// "<%%" is a literal "<%".
		if strings.HasPrefix(src[i:], "<%%") {
			emitText(text)
			emitText("<%")
			i += 3
			continue
		}
		tagLine := srcLine + strings.Count(text, "\n")
		leftTrim := strings.HasPrefix(src[i:], "<%-")
		if leftTrim {
			// Drop spaces and tabs between the start of the line and the tag.
			k := strings.LastIndexByte(text, '\n')
			if strings.Trim(text[k+1:], " \t") == "" {
				text = text[:k+1]
			}
		}
		emitText(text)
		end := strings.Index(src[i:], "%>")
		if end < 0 {
			errs.add(ErrSyntax, file, tagLine, "", "ERB tag is not closed with %%>")
			return "", nil, false
		}
		tag := src[i+2 : i+end]
		closeLen := 2
		rightTrim := strings.HasSuffix(tag, "-")
		if leftTrim {
			tag = tag[1:]
		}
		if rightTrim {
			tag = tag[:len(tag)-1]
		}
		// Count newlines inside the tag itself.
		srcLine += strings.Count(src[i:i+end], "\n")
		i += end + closeLen
		if rightTrim && strings.HasPrefix(src[i:], "\n") {
			i++
			srcLine++
		}
		switch {
		case strings.HasPrefix(tag, "#"), strings.TrimSpace(tag) == "":
			// comment, or an empty tag
		case strings.HasPrefix(tag, "="):
			v, good := evalERB(file, tagLine, strings.TrimSpace(tag[1:]), getenv, errs)
			if !good {
				ok = false
				continue
			}
			emit(v, tagLine)
		default:
			ok = false
			errs.add(ErrUnsafe, file, tagLine, "", "ERB code %q is not supported: capstan only evaluates <%%= ENV[\"X\"] %%> and <%%= ENV.fetch(\"X\"[, \"default\"]) %%> and never runs code from the repository", abbreviate(strings.TrimSpace(tag)))
		}
	}
	if !ok {
		return "", nil, false
	}
	return out.String(), lines, true
}

func evalERB(file string, line int, expr string, getenv func(string) (string, bool), errs *collector) (string, bool) {
	if m := erbIndex.FindStringSubmatch(expr); m != nil {
		v, _ := getenv(unquote(m[1]))
		return v, true
	}
	if m := erbFetch.FindStringSubmatch(expr); m != nil {
		name := unquote(m[1])
		if v, found := getenv(name); found {
			return v, true
		}
		if m[2] != "" {
			return unquote(m[2]), true
		}
		errs.add(ErrInvalid, file, line, "", "ERB: environment variable %s is not set (ENV.fetch without a default)", name)
		return "", false
	}
	errs.add(ErrUnsafe, file, line, "", "ERB expression %q is not supported: capstan only evaluates ENV[\"X\"] and ENV.fetch(\"X\"[, \"default\"]) and never runs code from the repository", abbreviate(expr))
	return "", false
}

func unquote(s string) string { return s[1 : len(s)-1] }

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
