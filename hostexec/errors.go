package hostexec

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error returned by a Pool names the host and wraps
// one of these (or a context error, or an *ExitError) so callers decide what
// to do next with errors.Is / errors.As.
var (
	// ErrHostKey: the host's key was refused. It is permanent until the
	// operator changes known_hosts (or the host its key): alert, and do
	// not retry in a loop. ErrUnknownHost, ErrHostKeyMismatch and
	// ErrHostKeyRevoked each wrap it, so errors.Is(err, ErrHostKey) holds
	// for all three.
	ErrHostKey = errors.New("host key refused")
	// ErrUnknownHost: no known_hosts entry matches the host and accept-new
	// is off. The operator must add the key (ssh-keyscan, or one run with
	// accept-new). The message carries the SHA256 fingerprint seen.
	ErrUnknownHost error = &hostKeyError{"host key unknown"}
	// ErrHostKeyMismatch: known_hosts has keys for the host, but not the
	// one presented. Possibly a man-in-the-middle; never retried
	// automatically. The message names the known_hosts file:line.
	ErrHostKeyMismatch error = &hostKeyError{"host key mismatch"}
	// ErrHostKeyRevoked: the presented key is marked @revoked.
	ErrHostKeyRevoked error = &hostKeyError{"host key revoked"}
	// ErrAuth: the server refused every identity offered.
	ErrAuth = errors.New("ssh authentication failed")
	// ErrUnreachable: the TCP connection or the SSH handshake failed
	// (refused, no route, ConnectTimeout or the ctx ran out, reset, jump
	// host could not connect), or keepalives went unanswered (see
	// Config.KeepaliveMax). The host should back off; other hosts are
	// unaffected.
	ErrUnreachable = errors.New("host unreachable")
	// ErrConnectionLost: the connection broke while a command was running
	// (sshd killed, host rebooted, network cut). Whether the command ran is
	// unknown. The next call re-dials. When the Pool closed the connection
	// because keepalives went unanswered, the error wraps ErrUnreachable
	// too.
	ErrConnectionLost = errors.New("ssh connection lost")
	// ErrTimeout: a Run or Upload outlived Config.CommandTimeout and was
	// stopped. The error also wraps context.DeadlineExceeded.
	ErrTimeout = errors.New("ssh command timed out")
	// ErrInvalidArgv: empty argv, a NUL byte in an argument, or an invalid
	// Env name.
	ErrInvalidArgv = errors.New("invalid argv")
	// ErrSecretOnCommandLine: an argument or Env value contains a secret
	// known to the Pool's redactor. Secrets go over stdin (Upload, Stdin).
	ErrSecretOnCommandLine = errors.New("secret on remote command line")
	// ErrConfig: the SSH configuration is unusable (unreadable key or
	// known_hosts file, bad ssh_config, no identities).
	ErrConfig = errors.New("invalid ssh configuration")
	// ErrClosed: the Pool was closed.
	ErrClosed = errors.New("hostexec pool closed")
)

// hostKeyError is the type of the host key sentinels: each is itself and
// an ErrHostKey.
type hostKeyError struct{ msg string }

func (e *hostKeyError) Error() string { return e.msg }
func (e *hostKeyError) Unwrap() error { return ErrHostKey }

// ExitError is returned when a remote command ran and exited non-zero or
// was killed by a signal.
type ExitError struct {
	Host   string // host as given to the Pool (user@addr:port)
	Argv   []string
	Code   int    // exit status; 128+n when killed by signal n
	Signal string // signal name without "SIG" when killed by a signal ("TERM"), else ""
	// Stderr is the command's complete standard error, with the Pool's
	// secrets masked (errors travel to logs and state).
	Stderr []byte
}

// maxStderrInMessage bounds the part of stderr shown in Error.
const maxStderrInMessage = 512

// Error names the host, the command and the exit code, followed by the last
// line(s) of stderr, trimmed.
func (e *ExitError) Error() string {
	var b strings.Builder
	name := ""
	if len(e.Argv) > 0 {
		name = e.Argv[0]
	}
	if e.Signal != "" {
		fmt.Fprintf(&b, "%s: %s killed by signal %s", e.Host, name, e.Signal)
	} else {
		fmt.Fprintf(&b, "%s: %s exited with status %d", e.Host, name, e.Code)
	}
	if s := strings.TrimSpace(string(e.Stderr)); s != "" {
		if len(s) > maxStderrInMessage {
			s = "…" + s[len(s)-maxStderrInMessage:]
		}
		b.WriteString(": ")
		b.WriteString(s)
	}
	return b.String()
}
