package main

import (
	"bytes"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"

	"github.com/capstan-dev/capstan/hostexec"
)

// maxPrefixedLine bounds the partial line a linePrefixer holds: a longer
// one is written (prefixed) in pieces of this size.
const maxPrefixedLine = 64 << 10

// linePrefixer writes every line written to it to w as "PREFIX: line".
// It holds a partial line until its newline (or Flush), and takes mu
// around each write to w, so the lines of several prefixers sharing mu
// and w never mix. Output is copied as is, unredacted.
type linePrefixer struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

func newLinePrefixer(mu *sync.Mutex, w io.Writer, prefix string) *linePrefixer {
	return &linePrefixer{mu: mu, w: w, prefix: []byte(prefix + ": ")}
}

// Write implements io.Writer; it never fails (a failing w drops output).
func (p *linePrefixer) Write(b []byte) (int, error) {
	n := len(b)
	p.buf = append(p.buf, b...)
	var out []byte
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 && len(p.buf) >= maxPrefixedLine {
			i = maxPrefixedLine - 1
			out = append(append(append(out, p.prefix...), p.buf[:i+1]...), '\n')
			p.buf = p.buf[i+1:]
			continue
		}
		if i < 0 {
			break
		}
		out = append(append(out, p.prefix...), p.buf[:i+1]...)
		p.buf = p.buf[i+1:]
	}
	p.buf = append([]byte(nil), p.buf...)
	if len(out) > 0 {
		p.mu.Lock()
		_, _ = p.w.Write(out)
		p.mu.Unlock()
	}
	return n, nil
}

// Flush writes a held partial line, ended with a newline.
func (p *linePrefixer) Flush() {
	if len(p.buf) == 0 {
		return
	}
	line := append(append(append([]byte(nil), p.prefix...), p.buf...), '\n')
	p.buf = nil
	p.mu.Lock()
	_, _ = p.w.Write(line)
	p.mu.Unlock()
}

// openTerminal returns the local end of an interactive command: e's
// stdin and stdout, TERM, and, when stdin is a terminal, that terminal
// in raw mode (keys, Ctrl-C included, go to the remote command as
// bytes; the remote terminal does the echo and the signals), its size,
// and its size changes (SIGWINCH). restore puts the terminal back; call
// it once the command ended.
func openTerminal(e *env) (t hostexec.Terminal, restore func(), err error) {
	t = hostexec.Terminal{In: e.stdin, Out: e.stdout, Term: e.getenv("TERM")}
	in, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return t, func() {}, nil
	}
	fd := int(in.Fd())
	size := func() hostexec.WindowSize {
		w, h, err := term.GetSize(fd)
		if err != nil {
			return hostexec.WindowSize{}
		}
		return hostexec.WindowSize{Cols: w, Rows: h}
	}
	t.Size = size()
	old, err := term.MakeRaw(fd)
	if err != nil {
		return t, nil, err
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	resize := make(chan hostexec.WindowSize, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-winch:
				select {
				case resize <- size():
				case <-stop:
					return
				}
			}
		}
	}()
	t.Resize = resize
	return t, func() {
		signal.Stop(winch)
		close(stop)
		<-done
		_ = term.Restore(fd, old)
	}, nil
}
