package hostexec

import (
	"context"
	"io"

	"golang.org/x/crypto/ssh"
)

// DefaultTerm is the TERM of a remote terminal when Terminal.Term is "".
const DefaultTerm = "xterm-256color"

// WindowSize is a terminal's size in character cells. A zero field takes
// the default (80 columns, 24 rows).
type WindowSize struct {
	Cols, Rows int
}

func (w WindowSize) orDefault() WindowSize {
	if w.Cols <= 0 {
		w.Cols = 80
	}
	if w.Rows <= 0 {
		w.Rows = 24
	}
	return w
}

// Terminal is the local end of an interactive command (see
// [Pool.Interactive]).
type Terminal struct {
	// In is copied to the remote terminal as typed. Put the local
	// terminal in raw mode first: Ctrl-C then arrives as the byte 0x03,
	// which the remote terminal turns into SIGINT for the command. nil:
	// no input.
	In io.Reader
	// Out receives everything the command writes to its terminal (its
	// stdout and stderr are one stream on a terminal), unredacted: it is
	// the operator's session. nil discards it.
	Out io.Writer
	// Term is the remote TERM; "" means DefaultTerm.
	Term string
	// Size is the initial window size.
	Size WindowSize
	// Resize delivers window size changes (SIGWINCH of the local
	// terminal); each is sent as an SSH "window-change" request. nil:
	// the size never changes.
	Resize <-chan WindowSize
}

// Interactive runs argv on host with a pseudo-terminal allocated by sshd,
// as `ssh -t host 'argv'` does: t.In is copied to it, its output to
// t.Out, and t.Resize is forwarded while the command runs. It returns
// when the command exits; a goroutine still blocked reading t.In then
// stops at its next read (its bytes are dropped).
//
// Errors are as for [Pool.Stream]: a non-zero exit returns an *ExitError
// (its Stderr is empty: the terminal merges the streams), ctx ending
// stops the command, and Config.CommandTimeout does not apply. A
// terminal sshd refuses (PermitTTY no) returns an error naming the host,
// before the command starts.
func (p *Pool) Interactive(ctx context.Context, host Host, argv []string, t Terminal) error {
	out := t.Out
	if out == nil {
		out = io.Discard
	}
	return p.exec(ctx, host, argv, RunOptions{Stdin: t.In}, out, io.Discard, func() []byte { return nil }, 0, &t)
}

// requestPTY asks sshd for a terminal on s and forwards t.Resize until
// done is closed.
func requestPTY(s *ssh.Session, t *Terminal, done <-chan struct{}) error {
	term := t.Term
	if term == "" {
		term = DefaultTerm
	}
	size := t.Size.orDefault()
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := s.RequestPty(term, size.Rows, size.Cols, modes); err != nil {
		return err
	}
	if t.Resize == nil {
		return nil
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case w, ok := <-t.Resize:
				if !ok {
					return
				}
				w = w.orDefault()
				_ = s.WindowChange(w.Rows, w.Cols)
			}
		}
	}()
	return nil
}
