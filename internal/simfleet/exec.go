package simfleet

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// cmdCtx is one command being run on a host.
type cmdCtx struct {
	h     *Host
	line  string
	stdin io.Reader
	out   io.Writer
	errw  io.Writer
}

// exec runs a command line as sshd would hand it to the user's shell and
// returns its exit status.
func (h *Host) exec(line string, stdin io.Reader, out, errw io.Writer) int {
	h.wait(h.latency().RTT + h.latency().Exec)
	x := &cmdCtx{h: h, line: line, stdin: stdin, out: out, errw: errw}
	argv, err := splitLine(line)
	if err != nil || len(argv) == 0 {
		return x.unknown()
	}
	return x.run(argv)
}

// run runs argv: a shell script, a docker CLI command or one of the few
// coreutils capstan calls.
func (x *cmdCtx) run(argv []string) int {
	switch {
	case len(argv) >= 3 && argv[0] == "sh" && argv[1] == "-c":
		var args []string
		if len(argv) > 4 {
			args = argv[4:]
		}
		return x.script(argv[2], argv[3:min(4, len(argv))], args)
	case argv[0] == "docker":
		return x.docker(argv[1:])
	case argv[0] == "mkdir" && len(argv) >= 3 && argv[1] == "-p":
		x.count("mkdir")
		dirs := argv[2:]
		if dirs[0] == "--" {
			dirs = dirs[1:]
		}
		x.h.mu.Lock()
		for _, d := range dirs {
			x.h.state.mkdirAll(d)
		}
		x.h.mu.Unlock()
		return 0
	case argv[0] == "cat" && len(argv) == 2:
		x.count("cat")
		content, ok := x.h.File(argv[1])
		if !ok {
			return x.fail(1, "cat: "+argv[1]+": No such file or directory")
		}
		io.WriteString(x.out, content)
		return 0
	case argv[0] == "rm" && len(argv) == 4 && argv[1] == "-r" && argv[2] == "--":
		x.count("rm")
		if !x.removeTree(argv[3]) {
			return x.fail(1, "rm: cannot remove '"+argv[3]+"': No such file or directory")
		}
		return 0
	}
	return x.unknown()
}

func (x *cmdCtx) count(kind string) { x.h.f.stats.count(kind) }

// unknown answers a command the sim does not model: exit 127, as a shell
// that cannot find it, and a record in Stats.Unknown.
func (x *cmdCtx) unknown() int {
	line := x.line
	if len(line) > 400 {
		line = line[:400] + "…"
	}
	x.h.f.stats.unknownCmd(x.h.addr + ": " + line)
	fmt.Fprintln(x.errw, "sh: 1: simfleet: command not modelled")
	return 127
}

// fail prints msg to stderr and returns code.
func (x *cmdCtx) fail(code int, msg string) int {
	fmt.Fprintln(x.errw, msg)
	return code
}

// writeFile stores content at p (relative to Home), creating its parents.
func (h *Host) writeFile(p, content string, appendTo bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p = abs(p)
	h.state.mkdirAll(p[:strings.LastIndex(p, "/")+1])
	if appendTo {
		content = h.state.files[p] + content
	}
	h.state.files[p] = content
}

// removeTree removes a directory or file and everything under it.
func (x *cmdCtx) removeTree(p string) bool {
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	p = abs(p)
	found := h.state.dirs[p]
	for d := range h.state.dirs {
		if d == p || strings.HasPrefix(d, p+"/") {
			delete(h.state.dirs, d)
		}
	}
	for f := range h.state.files {
		if f == p || strings.HasPrefix(f, p+"/") {
			delete(h.state.files, f)
			found = true
		}
	}
	return found
}

var errQuote = errors.New("simfleet: unterminated quote")

// splitLine splits a command line into words as a POSIX shell does for
// what capstan sends: plain words, '…' quoting, "…" quoting with
// backslash escapes, and backslash escapes outside quotes. Leading
// unquoted NAME=value assignments (the run ID hostexec sets) are dropped.
func splitLine(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted, leading := false, false, true
	end := func() {
		if leading && !quoted && isAssignment(cur.String()) {
			cur.Reset()
		} else {
			leading = false
			words = append(words, cur.String())
			cur.Reset()
		}
		inWord, quoted = false, false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				end()
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errQuote
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord, quoted = true, true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`\n", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errQuote
			}
			inWord, quoted = true, true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord, quoted = true, true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		end()
	}
	return words, nil
}

func isAssignment(w string) bool {
	k, _, ok := strings.Cut(w, "=")
	if !ok || k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c != '_' && !(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') && !(i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
