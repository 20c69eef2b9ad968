// Package reconcile makes Docker hosts match an app's desired state the
// way Kamal 2 would, and tells how they differ from it.
//
// A pass is observe → plan → converge. Observe reads each host in one round
// trip (one `docker ps -a`, the user's home and Kamal's lock). Plan compares
// what was observed with the Desired state and yields, per host, ordered
// steps with their reasons, plus drift items. Apply executes a plan value in
// Kamal's order (pull everywhere first, lock, proxy and accessories, rolling
// boot groups with the primary-role barrier, switch, stop old, tag latest,
// prune, audit, unlock), so `kamal` and capstan can manage the same hosts.
//
// The package reaches hosts only through the interfaces declared here
// (Runner, Uploader); cmd/capstan wires hostexec into them. It never logs a
// secret: secret values only travel as Secret values, written to hosts over
// stdin.
package reconcile

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
)

// Sentinel errors; errors returned by this package wrap them.
var (
	// ErrObserve: a host's observation output could not be understood.
	ErrObserve = errors.New("cannot read host state")
	// ErrLocked: Kamal's deploy lock is held by someone else and did not
	// clear within the lock timeout. The message names the holder.
	ErrLocked = errors.New("deploy lock held")
	// ErrUnhealthy: a new container never became healthy (or exited, or
	// kept restarting) before the deploy timeout. The old one still serves.
	ErrUnhealthy = errors.New("new container unhealthy")
	// ErrPull: the image could not be pulled, or lacks the service label.
	ErrPull = errors.New("image pull failed")
	// ErrHost: a step failed on a host for another reason (command failed,
	// connection lost). The host is reported and converged next pass.
	ErrHost = errors.New("host step failed")
	// ErrBarrier: the first primary-role container failed, so the other
	// roles were not booted (Kamal's barrier).
	ErrBarrier = errors.New("primary role unhealthy; other roles not booted")
	// ErrRolledBack: the host took the new version, then was switched back
	// because another host failed its health check.
	ErrRolledBack = errors.New("switched back to the previous version")
	// ErrUnreachable: a host could not be reached or observed in time. It
	// is reported as drift of kind "unreachable" and converged when it
	// answers again.
	ErrUnreachable = errors.New("host unreachable")
	// ErrJobFailed: a release job (x-capstan.jobs) exited non-zero or
	// outlived its timeout. Before the deploy it is a bad release: nothing
	// of the new version booted, the old version serves.
	ErrJobFailed = errors.New("release job failed")
	// ErrPermanent marks an error that waiting or retrying cannot fix
	// (credentials refused, a registry that speaks plain HTTP): adapters
	// wrap it so the loop alerts at once instead of waiting.
	ErrPermanent = errors.New("permanent")
)

// Runner executes argv on a host (never a shell string) and returns its
// stdout. stdin, when not nil, is fed to the command; secrets travel only
// that way. A command that ran and exited non-zero returns an error for
// which ExitCode reports the status.
type Runner interface {
	Run(ctx context.Context, host string, argv []string, stdin io.Reader) (stdout []byte, err error)
}

// Uploader writes a file on a host atomically with the given mode, creating
// parent directories. A path that does not start with "/" is relative to
// the SSH user's home. The content never appears on a command line.
type Uploader interface {
	Upload(ctx context.Context, host, path string, mode fs.FileMode, content []byte) error
}

// Dialer opens a stream to addr as seen from host (for health probes).
type Dialer interface {
	Dial(ctx context.Context, host, network, addr string) (net.Conn, error)
}

// Host is what the reconciler needs from the SSH layer.
type Host interface {
	Runner
	Uploader
	Dialer
}

// ExitError is how adapters report a command that ran and exited non-zero.
type ExitError struct {
	Host   string
	Code   int
	Stderr string // secrets already masked
	Err    error  // the adapter's own error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns the exit status of a remote command from err, or -1 when
// err is not a command's non-zero exit (a connection error, say).
func ExitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}
