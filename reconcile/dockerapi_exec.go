package reconcile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ExecRunner returns a Runner that runs `docker exec CONTAINER ARG…`
// (no options, no stdin) through the host's Docker Engine API when the
// API is usable there, and everything else, or any exec the API could not
// start, with r. It is the same exec in the same container (what a proxy
// driver asks of kamal-proxy is unchanged, and Kamal sees nothing
// different), without starting a docker CLI on the host, which costs 0.1–
// 0.2 s per call on a busy host. A command that ran and exited non-zero is
// a *ExitError with its stderr, as from r.
func (a *App) ExecRunner(r Runner) Runner { return execRunner{a: a, cli: r} }

type execRunner struct {
	a   *App
	cli Runner
}

func (e execRunner) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	api := e.a.dockerAPI()
	if stdin != nil || len(argv) < 4 || argv[0] != "docker" || argv[1] != "exec" || strings.HasPrefix(argv[2], "-") || !api.usable(host) {
		return e.cli.Run(ctx, host, argv, stdin)
	}
	out, err := api.exec(ctx, host, argv[2], argv[3:])
	if errors.Is(err, errExecNotStarted) {
		return e.cli.Run(ctx, host, argv, stdin)
	}
	var ee *ExitError
	if errors.As(err, &ee) && e.a.Redact != nil {
		ee.Stderr, ee.Err = e.a.Redact(ee.Stderr), errors.New(e.a.Redact(ee.Err.Error()))
	}
	return out, err
}

// errExecNotStarted marks an exec the API did not start (no such
// container, a broken channel): the CLI is asked instead, and answers as
// it always did.
var errExecNotStarted = errors.New("exec not started")

// maxExecOutput bounds the stdout and the stderr kept from an exec.
const maxExecOutput = 16 << 20

// exec runs argv in container on host as `docker exec` does: create the
// exec, start it attached (the answer streams stdout and stderr until the
// command ends), then read its exit code. It returns stdout; a non-zero
// exit is a *ExitError carrying stderr. ctx bounds it.
func (d *dockerAPI) exec(ctx context.Context, host, container string, argv []string) ([]byte, error) {
	const bound = time.Hour // ctx is the real bound (the caller's command timeout)
	var created struct {
		ID string `json:"Id"`
	}
	in := map[string]any{"AttachStdout": true, "AttachStderr": true, "Cmd": argv}
	err := d.callWith(ctx, host, http.MethodPost, "/containers/"+container+"/exec", nil, in, apiTimeout, &created)
	if err != nil || created.ID == "" {
		if !errNotFound(err) && ctx.Err() == nil {
			d.markBroken(host)
		}
		return nil, fmt.Errorf("%w: %v", errExecNotStarted, err)
	}
	var stdout, stderr bytes.Buffer
	err = d.do(ctx, host, http.MethodPost, "/exec/"+created.ID+"/start", nil, "", map[string]any{"Detach": false, "Tty": false}, bound, func(body io.Reader) error {
		return demux(body, &stdout, &stderr)
	})
	if err != nil {
		return nil, fmt.Errorf("docker exec %s on %s: %w", container, host, err)
	}
	var state struct {
		Running  bool
		ExitCode int
	}
	if err := d.call(ctx, host, http.MethodGet, "/exec/"+created.ID+"/json", nil, apiTimeout, &state); err != nil {
		return nil, fmt.Errorf("docker exec %s on %s: %w", container, host, err)
	}
	if state.Running {
		return nil, fmt.Errorf("docker exec %s on %s: its output ended while it still runs", container, host)
	}
	if state.ExitCode != 0 {
		msg := fmt.Sprintf("%s: docker exited with status %d", host, state.ExitCode)
		if s := strings.TrimSpace(stderr.String()); s != "" {
			msg += ": " + boundText(s[max(0, len(s)-maxAPIMessage):], maxAPIMessage)
		}
		return stdout.Bytes(), &ExitError{Host: host, Code: state.ExitCode, Stderr: stderr.String(), Err: errors.New(msg)}
	}
	return stdout.Bytes(), nil
}

// demux splits Docker's multiplexed stream (frames of an 8-byte header:
// stream 1 stdout or 2 stderr, 3 zero bytes, a big-endian uint32 length)
// into stdout and stderr, each kept up to maxExecOutput. A stream cut in a
// frame is an error.
func demux(r io.Reader, stdout, stderr *bytes.Buffer) error {
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("%w: docker exec output: %v", ErrObserve, err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		var w *bytes.Buffer
		switch hdr[0] {
		case 1:
			w = stdout
		case 2:
			w = stderr
		default:
			return fmt.Errorf("%w: docker exec output: stream %d", ErrObserve, hdr[0])
		}
		keep := min(n, max(0, maxExecOutput-int64(w.Len())))
		if _, err := io.CopyN(w, r, keep); err != nil {
			return fmt.Errorf("%w: docker exec output: %v", ErrObserve, err)
		}
		if _, err := io.CopyN(io.Discard, r, n-keep); err != nil {
			return fmt.Errorf("%w: docker exec output: %v", ErrObserve, err)
		}
	}
}
