package hostexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/internal/fence"

	"golang.org/x/crypto/ssh"
)

// cancelGrace is how long a cancelled command gets between SIGTERM and the
// session being closed.
const cancelGrace = 2 * time.Second

// maxStreamStderr bounds the stderr tail kept for the ExitError of Stream.
const maxStreamStderr = 64 << 10

// RunOptions are the optional inputs of a command.
type RunOptions struct {
	// Stdin, if non-nil, is copied to the command's standard input, which
	// is then closed. This is the channel for secrets.
	Stdin io.Reader
	// Env sets environment variables for the command. Values travel on
	// the remote command line (as NAME='value' assignments before the
	// command, because sshd refuses SSH "env" requests unless AcceptEnv
	// allows them), so they are visible in the remote process list: Env
	// is for non-secret values only. A value containing a secret known to
	// the Pool's redactor is refused with ErrSecretOnCommandLine; pass
	// secrets over Stdin or in a file written by Upload.
	Env map[string]string
}

// Result is the output of a command: all of it when the command exited 0,
// what it wrote before failing otherwise. The bytes are exactly what the
// command wrote, unredacted: they are the caller's data to parse, not
// something to log.
type Result struct {
	Stdout, Stderr []byte
}

// Run runs argv on host and waits for it. argv is quoted with Quote; the
// remote login shell must be POSIX.
//
// A non-zero exit returns the output and an *ExitError carrying the code
// and the (redacted) stderr. When ctx ends first, the command is sent
// SIGTERM (an SSH "signal" request; since sshd refuses those for root
// logins, also a kill of every remote process tagged with the command's
// CAPSTAN_RUN environment id, over a second session), the session is
// closed after at most 2 s, and the error wraps ctx.Err(). The same
// happens when the command outlives Config.CommandTimeout, and the error
// then wraps ErrTimeout (and context.DeadlineExceeded). Other errors
// wrap ErrUnreachable, ErrConnectionLost, ErrUnknownHost,
// ErrHostKeyMismatch, ErrHostKeyRevoked (these three are each an
// ErrHostKey), ErrAuth, ErrConfig, ErrClosed, ErrInvalidArgv or
// ErrSecretOnCommandLine, and name the host.
func (p *Pool) Run(ctx context.Context, host Host, argv []string, opts RunOptions) (Result, error) {
	var stdout, stderr syncBuffer
	err := p.exec(ctx, host, argv, opts, &stdout, &stderr, func() []byte { return stderr.Bytes() }, p.cfg.CommandTimeout, nil)
	return Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, err
}

// Stream runs argv on host like Run, but copies its output to stdout and
// stderr as it arrives (for `docker logs -f`). Either writer may be nil
// (discard). No write happens after Stream returns. The ExitError keeps
// the last 64 KiB of stderr. Config.CommandTimeout does not apply: only
// ctx ends a stream.
func (p *Pool) Stream(ctx context.Context, host Host, argv []string, stdout, stderr io.Writer, opts RunOptions) error {
	tail := &tailBuffer{max: maxStreamStderr}
	var errW io.Writer = tail
	if stderr != nil {
		errW = io.MultiWriter(stderr, tail)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	return p.exec(ctx, host, argv, opts, stdout, errW, tail.Bytes, 0, nil)
}

// uploadScript writes stdin to a temp file next to the target ($2) with
// umask 077, sets its mode, and renames it over the target, so readers see
// the old file or the complete new one. The temp file is removed on any
// failure, including SIGTERM from a cancelled ctx.
const uploadScript = `trap 'rm -f -- "$2"' EXIT; trap 'exit 143' HUP INT TERM; ` +
	`mkdir -p -- "$1" && (umask 077 && cat > "$2") && chmod "$3" -- "$2" && mv -f -- "$2" "$4"`

// Upload writes content to path on host (relative paths are relative to
// the user's home), creating parent directories. The content travels over
// the command's stdin, never on a command line. The file is created with
// umask 077, chmod'ed to mode's permission bits, and renamed into place, so
// it appears atomically (it is not fsync'ed). Errors are as for Run,
// Config.CommandTimeout included.
func (p *Pool) Upload(ctx context.Context, host Host, filePath string, mode fs.FileMode, content []byte) error {
	return p.upload(ctx, host, filePath, mode, bytes.NewReader(content))
}

func (p *Pool) upload(ctx context.Context, host Host, filePath string, mode fs.FileMode, r io.Reader) error {
	if filePath == "" || strings.HasSuffix(filePath, "/") {
		return fmt.Errorf("%w: upload path %q", ErrInvalidArgv, filePath)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	dir, base := path.Split(filePath)
	if dir == "" {
		dir = "."
	}
	tmp := path.Join(dir, "."+base+".capstan-"+hex.EncodeToString(rnd[:]))
	argv := []string{"sh", "-c", uploadScript, "sh", dir, tmp, fmt.Sprintf("%04o", mode.Perm()), filePath}
	_, err := p.Run(ctx, host, argv, RunOptions{Stdin: r})
	if err != nil {
		return fmt.Errorf("upload %s: %w", filePath, err)
	}
	return nil
}

// Dial opens a connection from host to addr: network "tcp" (also "tcp4",
// "tcp6") uses an SSH direct-tcpip channel, "unix" a direct-streamlocal
// channel to the socket path addr (e.g. /var/run/docker.sock). The
// connection shares host's pooled SSH connection. It does not support
// deadlines; it fails (as a closed connection) when keepalives close the
// SSH connection. A refused target returns an *ssh.OpenChannelError
// (wrapped).
func (p *Pool) Dial(ctx context.Context, host Host, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("%w: network %q", ErrInvalidArgv, network)
	}
	h, err := p.Resolve(host)
	if err != nil {
		return nil, err
	}
	if err := fence.Check(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	for attempt := 0; ; attempt++ {
		l, c, err := p.client(ctx, h)
		if err != nil {
			return nil, err
		}
		nc, err := l.DialContext(ctx, network, addr)
		if err == nil {
			return nc, nil
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: dial %s %s: %w", h, network, addr, err)
		}
		c.drop(l, nil)
		if attempt > 0 {
			return nil, fmt.Errorf("%w: %s: dial %s %s: %w", ErrConnectionLost, h, network, addr, l.lost(err))
		}
	}
}

// runEnv tags every remote command (and the processes it starts) with a
// random id in its environment, so a cancelled command can be found and
// stopped when sshd refuses the SSH "signal" request. OpenSSH refuses it
// for root logins (no privilege separation after auth), which is Kamal's
// default user.
const runEnv = "CAPSTAN_RUN"

// killScript sends SIGTERM to every process whose environment holds
// CAPSTAN_RUN=$1 (Linux /proc). It runs in its own session, whose
// environment does not have the tag.
const killScript = `for d in /proc/[0-9]*; do grep -qszxF -- "` + runEnv + `=$1" "$d/environ" && kill -TERM "${d#/proc/}" 2>/dev/null; done; exit 0`

func newRunID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// stop ends a command whose ctx is done: SIGTERM through the session (where
// sshd allows it), else SIGTERM to the processes tagged with runID. It
// returns when the command has ended or after cancelGrace, whichever comes
// first; the attempts run in the background, so a dead connection cannot
// hold the caller. The caller closes the session.
func (p *Pool) stop(cl *ssh.Client, s *ssh.Session, runID string, done <-chan error) {
	exited := make(chan struct{})
	go func() {
		_ = s.Signal(ssh.SIGTERM)
		select {
		case <-exited:
			return
		case <-time.After(50 * time.Millisecond):
		}
		ks, err := cl.NewSession()
		if err != nil {
			return
		}
		defer ks.Close()
		_ = ks.Run(Quote([]string{"sh", "-c", killScript, "sh", runID}))
	}()
	t := time.NewTimer(cancelGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	close(exited)
}

// commandLine checks argv and env and builds the remote command line.
func (p *Pool) commandLine(argv []string, env map[string]string, runID string) (string, error) {
	if len(argv) == 0 || argv[0] == "" {
		return "", fmt.Errorf("%w: empty command", ErrInvalidArgv)
	}
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("%w: NUL byte in argument %d", ErrInvalidArgv, i)
		}
		if p.red.Contains(a) {
			return "", fmt.Errorf("%w: argument %d", ErrSecretOnCommandLine, i)
		}
	}
	var b strings.Builder
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := env[k]
		if !validEnvName(k) || strings.IndexByte(v, 0) >= 0 {
			return "", fmt.Errorf("%w: env %q", ErrInvalidArgv, k)
		}
		if p.red.Contains(v) {
			return "", fmt.Errorf("%w: env %s", ErrSecretOnCommandLine, k)
		}
		b.WriteString(k)
		b.WriteByte('=')
		quoteTo(&b, v)
		b.WriteByte(' ')
	}
	if runID != "" {
		b.WriteString(runEnv + "=" + runID + " ")
	}
	b.WriteString(Quote(argv))
	return b.String(), nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// exec runs one command. stderrTail returns the stderr to put into an
// ExitError. A positive timeout bounds the command once its session is
// open (see Config.CommandTimeout). A non-nil pty runs it on a remote
// terminal (see Interactive).
func (p *Pool) exec(ctx context.Context, host Host, argv []string, opts RunOptions,
	stdout, stderr io.Writer, stderrTail func() []byte, timeout time.Duration, pty *Terminal) (err error) {
	start := p.now()
	runID := newRunID()
	cmdLine, err := p.commandLine(argv, opts.Env, runID)
	if err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	h, err := p.Resolve(host)
	if err != nil {
		return err
	}
	name := h.String()
	cnt := p.counter(h)
	cnt.commands.Add(1)
	code := -1
	defer func() {
		if err != nil {
			cnt.failures.Add(1)
		}
		attrs := []any{"host", name, "argv", p.red.String(Quote(argv)), "duration", p.now().Sub(start), "exit", code}
		if err != nil && code <= 0 {
			attrs = append(attrs, "err", err)
		}
		p.log.Debug("ssh command", attrs...)
	}()

	s, l, c, release, err := p.session(ctx, h)
	if err != nil {
		return err
	}
	defer release()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout,
			fmt.Errorf("%w after %v: %w", ErrTimeout, timeout, context.DeadlineExceeded))
		defer cancel()
	}
	// On a dead connection a close can block; after a cancel, close in the
	// background so Run returns within its deadline.
	syncClose := true
	defer func() {
		if syncClose {
			s.Close()
		} else {
			go s.Close()
		}
	}()

	outGate := &gateWriter{w: stdout, n: &cnt.bytesIn}
	errGate := &gateWriter{w: stderr, n: &cnt.bytesIn}
	defer outGate.close()
	defer errGate.close()
	s.Stdout, s.Stderr = outGate, errGate
	if pty != nil {
		ptyDone := make(chan struct{})
		defer close(ptyDone)
		if err := requestPTY(s, pty, ptyDone); err != nil {
			return fmt.Errorf("%s: terminal refused (sshd PermitTTY?): %w", name, err)
		}
	}
	if opts.Stdin != nil {
		pipe, perr := s.StdinPipe()
		if perr != nil {
			return fmt.Errorf("%w: %s: %w", ErrConnectionLost, name, perr)
		}
		go func() {
			n, _ := io.Copy(pipe, opts.Stdin)
			cnt.bytesOut.Add(uint64(n))
			pipe.Close()
		}()
	}
	started := make(chan error, 1)
	go func() { started <- s.Start(cmdLine) }() // waits for sshd's reply
	select {
	case err := <-started:
		if err != nil {
			c.drop(l, nil)
			return fmt.Errorf("%w: %s: start %s: %w", ErrConnectionLost, name, argv[0], l.lost(err))
		}
	case <-ctx.Done():
		syncClose = false
		return fmt.Errorf("%s: start %s: %w", name, argv[0], ctxErr(ctx))
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()

	var waitErr error
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		syncClose = false
		p.stop(l.Client, s, runID, done)
		return fmt.Errorf("%s: %s: %w", name, argv[0], ctxErr(ctx))
	}

	var ee *ssh.ExitError
	switch {
	case waitErr == nil:
		code = 0
		return nil
	case errors.As(waitErr, &ee):
		code = ee.ExitStatus()
		sig := ee.Signal()
		outGate.close()
		errGate.close()
		return &ExitError{
			Host:   name,
			Argv:   p.red.Strings(argv),
			Code:   code,
			Signal: strings.TrimPrefix(sig, "SIG"),
			Stderr: slices.Clone(p.red.Bytes(stderrTail())),
		}
	default:
		// No exit status: the connection broke (sshd killed, network cut).
		c.drop(l, nil)
		return fmt.Errorf("%w: %s: %s: %w", ErrConnectionLost, name, argv[0], l.lost(waitErr))
	}
}

// gateWriter forwards writes until closed, counting bytes; after close,
// writes are discarded so no caller writer is touched once exec returns.
type gateWriter struct {
	mu     sync.Mutex
	w      io.Writer
	n      interface{ Add(uint64) uint64 }
	closed bool
}

func (g *gateWriter) Write(b []byte) (int, error) {
	g.n.Add(uint64(len(b)))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return len(b), nil
	}
	if _, err := g.w.Write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (g *gateWriter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// syncBuffer is a bytes.Buffer safe for one writer and a later reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.b.Bytes())
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.b)
}
