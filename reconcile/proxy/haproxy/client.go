// Package haproxy drives HAProxy (2.6 or newer) as capstan's second proxy:
// one HAProxy container per host on the kamal network, one backend per
// routed role, a frontend on :80 routing by Host. Traffic moves through the
// runtime API on the stats socket (dynamic servers switched by state), never
// by reload, which measured zero failed requests (docs/proxies.md).
//
// The pieces: Render writes the configuration (including the live servers,
// so a restart comes back routing right); Client speaks the runtime API over
// any DialFunc (an SSH direct-streamlocal channel in production, a unix
// socket in tests); Probe and WaitHealthy check a new container over any
// DialFunc; Driver ties them into a proxy.Driver.
package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// DialFunc opens a new stream to the stats socket.
type DialFunc func(ctx context.Context) (net.Conn, error)

// ErrDrainTimeout means a server still had sessions when the drain timeout
// ran out.
var ErrDrainTimeout = errors.New("server did not drain in time")

// Client defaults.
const (
	DefaultCommandTimeout = 5 * time.Second
	// DefaultIdleTimeout is how long a kept channel may sit idle before the
	// client replaces it instead of risking a channel HAProxy has closed
	// (stats timeout, 10s by default; Render sets 2m).
	DefaultIdleTimeout = 8 * time.Second
	maxResponse        = 16 << 20
)

// ClientOptions tune a Client. The zero value keeps one interactive channel.
type ClientOptions struct {
	// PerCommand opens a fresh connection for every command instead of
	// keeping one interactive ("prompt") channel.
	PerCommand bool
	// CommandTimeout bounds each command, dial included; 0 means
	// DefaultCommandTimeout.
	CommandTimeout time.Duration
	// IdleTimeout: a kept channel idle for longer is closed (and replaced
	// on the next use); 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Client speaks HAProxy's runtime API. It is safe for concurrent use;
// commands are serialised on its channel.
type Client struct {
	dial DialFunc
	opt  ClientOptions

	mu      sync.Mutex
	conn    net.Conn
	br      *bufio.Reader
	lastUse time.Time
	// idle closes the kept channel once it sat unused for IdleTimeout:
	// HAProxy serves few stats connections at once (10 by default), and
	// idle ones left open by earlier Clients (one per revision's driver)
	// would make new ones wait for its stats timeout.
	idle *time.Timer
}

// armIdle (re)starts the idle timer after a use.
func (c *Client) armIdle() {
	if c.idle == nil {
		c.idle = time.AfterFunc(c.opt.IdleTimeout, c.closeIdle)
		return
	}
	c.idle.Reset(c.opt.IdleTimeout)
}

func (c *Client) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && time.Since(c.lastUse) >= c.opt.IdleTimeout {
		c.closeLocked()
	}
}

// NewClient returns a Client that reaches the stats socket through dial.
// No connection is made until the first command.
func NewClient(dial DialFunc, opt ClientOptions) *Client {
	if opt.CommandTimeout <= 0 {
		opt.CommandTimeout = DefaultCommandTimeout
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = DefaultIdleTimeout
	}
	return &Client{dial: dial, opt: opt}
}

// Close closes the kept channel, if any. The Client stays usable.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeLocked()
}

func (c *Client) closeLocked() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.br = nil, nil
	return err
}

// Exec sends one command line and returns HAProxy's answer without the
// trailing prompt and newlines. The command must come from a builder that
// validated its arguments: a newline or ';' is refused (ErrInvalid).
// Transport failures wrap proxy.ErrUnreachable. A kept channel that HAProxy
// closed is replaced and the command sent again, but only when nothing at
// all was read back, so a command is never run twice.
func (c *Client) Exec(ctx context.Context, cmd string) (string, error) {
	if cmd == "" || strings.ContainsAny(cmd, "\n\r;") {
		return "", fmt.Errorf("%w: runtime API command %q", proxy.ErrInvalid, cmd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.opt.CommandTimeout)
	defer cancel()
	if c.opt.PerCommand {
		return c.once(ctx, cmd)
	}
	if c.conn != nil && time.Since(c.lastUse) > c.opt.IdleTimeout {
		c.closeLocked()
	}
	for attempt := 0; ; attempt++ {
		reused := c.conn != nil
		if !reused {
			if err := c.connectLocked(ctx); err != nil {
				return "", err
			}
		}
		out, n, err := c.roundTrip(ctx, cmd)
		if err == nil {
			c.lastUse = time.Now()
			c.armIdle()
			return out, nil
		}
		c.closeLocked()
		if reused && n == 0 && attempt == 0 && ctx.Err() == nil {
			continue // HAProxy closed an idle channel: reconnect once
		}
		return "", fmt.Errorf("%w: %q: %w", proxy.ErrUnreachable, cmd, err)
	}
}

// connectLocked dials and switches the channel to interactive mode.
func (c *Client) connectLocked(ctx context.Context) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return fmt.Errorf("%w: dial stats socket: %w", proxy.ErrUnreachable, err)
	}
	c.conn, c.br = conn, bufio.NewReader(conn)
	if _, _, err := c.roundTrip(ctx, "prompt"); err != nil {
		c.closeLocked()
		return fmt.Errorf("%w: enter prompt mode: %w", proxy.ErrUnreachable, err)
	}
	return nil
}

// roundTrip writes cmd on the kept channel and reads up to the next prompt.
// n is the number of bytes read.
func (c *Client) roundTrip(ctx context.Context, cmd string) (string, int, error) {
	conn := c.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", 0, err
	}
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for buf.Len() < maxResponse {
		n, err := c.br.Read(chunk)
		buf.Write(chunk[:n])
		if b := buf.Bytes(); bytes.HasSuffix(b, []byte("\n> ")) || bytes.Equal(b, []byte("> ")) {
			return strings.TrimRight(string(b[:len(b)-2]), "\n"), buf.Len(), nil
		}
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return "", buf.Len(), err
		}
	}
	return "", buf.Len(), fmt.Errorf("answer longer than %d bytes", maxResponse)
}

// once runs cmd on a fresh connection, reading the answer to EOF.
func (c *Client) once(ctx context.Context, cmd string) (string, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: dial stats socket: %w", proxy.ErrUnreachable, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("%w: %q: %w", proxy.ErrUnreachable, cmd, err)
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxResponse))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("%w: %q: %w", proxy.ErrUnreachable, cmd, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// expect runs cmd and checks the answer is exactly want.
func (c *Client) expect(ctx context.Context, cmd, want string) error {
	out, err := c.Exec(ctx, cmd)
	if err != nil {
		return err
	}
	if out != want {
		return fmt.Errorf("%w: %q: %s", proxy.ErrProxy, cmd, strings.TrimSpace(out))
	}
	return nil
}

// State is an administrative server state for SetState.
type State string

// Server states accepted by `set server ... state`.
const (
	StateReady State = "ready"
	StateDrain State = "drain"
	StateMaint State = "maint"
)

// ref validates backend and server names and returns "backend/server".
// Names are checked strictly because the runtime API parser silently drops
// stray quotes and splits on spaces.
func ref(backend, server string) (string, error) {
	if !proxy.ValidName(backend) {
		return "", fmt.Errorf("%w: backend name %q", proxy.ErrInvalid, backend)
	}
	if !validServer(server) {
		return "", fmt.Errorf("%w: server name %q", proxy.ErrInvalid, server)
	}
	return backend + "/" + server, nil
}

func validAddr(addr netip.AddrPort) error {
	if !addr.IsValid() || addr.Port() == 0 || addr.Addr().Zone() != "" || addr.Addr().IsUnspecified() {
		return fmt.Errorf("%w: server address %q", proxy.ErrInvalid, addr)
	}
	return nil
}

// AddServer registers server in backend at addr with `pool-max-conn -1`
// (without it a dynamic server keeps no idle connections). HAProxy creates
// it in maintenance: SetState(StateReady) lets traffic in.
func (c *Client) AddServer(ctx context.Context, backend, server string, addr netip.AddrPort) error {
	cmd, err := addServerCommand(backend, server, addr)
	if err != nil {
		return err
	}
	return c.expect(ctx, cmd, "New server registered.")
}

// addServerCommand builds `add server` after validating every part.
func addServerCommand(backend, server string, addr netip.AddrPort) (string, error) {
	r, err := ref(backend, server)
	if err != nil {
		return "", err
	}
	if err := validAddr(addr); err != nil {
		return "", err
	}
	return "add server " + r + " " + addr.String() + " pool-max-conn -1", nil
}

// SetState sets the administrative state of a server.
func (c *Client) SetState(ctx context.Context, backend, server string, s State) error {
	r, err := ref(backend, server)
	if err != nil {
		return err
	}
	switch s {
	case StateReady, StateDrain, StateMaint:
	default:
		return fmt.Errorf("%w: server state %q", proxy.ErrInvalid, s)
	}
	return c.expect(ctx, "set server "+r+" state "+string(s), "")
}

// ShutdownSessions cuts every session still open on a server (WebSockets,
// slow requests past the drain timeout).
func (c *Client) ShutdownSessions(ctx context.Context, backend, server string) error {
	r, err := ref(backend, server)
	if err != nil {
		return err
	}
	return c.expect(ctx, "shutdown sessions server "+r, "")
}

// DelServer deletes a server; HAProxy requires it to be in maintenance and
// without sessions.
func (c *Client) DelServer(ctx context.Context, backend, server string) error {
	r, err := ref(backend, server)
	if err != nil {
		return err
	}
	return c.expect(ctx, "del server "+r, "Server deleted.")
}

// Backends lists the backend names (`show backend`).
func (c *Client) Backends(ctx context.Context) ([]string, error) {
	out, err := c.Exec(ctx, "show backend")
	if err != nil {
		return nil, err
	}
	return ParseBackends(out)
}

// ParseBackends parses `show backend`: a "# name" header, then one backend
// name a line. Errors wrap proxy.ErrParse.
func ParseBackends(out string) ([]string, error) {
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "# name") {
		return nil, fmt.Errorf("%w: show backend: %q", proxy.ErrParse, firstLine(out))
	}
	var names []string
	for _, l := range lines[1:] {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, l)
		}
	}
	return names, nil
}

// ShowStat returns the servers of backend (`show stat <backend> 4 -1`).
func (c *Client) ShowStat(ctx context.Context, backend string) ([]Stat, error) {
	if !proxy.ValidName(backend) {
		return nil, fmt.Errorf("%w: backend name %q", proxy.ErrInvalid, backend)
	}
	out, err := c.Exec(ctx, "show stat "+backend+" 4 -1")
	if err != nil {
		return nil, err
	}
	return ParseStat(out)
}

// ServersState returns the servers of backend, or of every backend when
// backend is "" (`show servers state`).
func (c *Client) ServersState(ctx context.Context, backend string) ([]ServerState, error) {
	cmd := "show servers state"
	if backend != "" {
		if !proxy.ValidName(backend) {
			return nil, fmt.Errorf("%w: backend name %q", proxy.ErrInvalid, backend)
		}
		cmd += " " + backend
	}
	out, err := c.Exec(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return ParseServersState(out)
}

// WaitIdle polls the server's current sessions (scur) every poll until they
// reach 0, or returns ErrDrainTimeout after timeout. poll <= 0 means 50ms.
func (c *Client) WaitIdle(ctx context.Context, backend, server string, timeout, poll time.Duration) error {
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	deadline := time.Now().Add(timeout)
	for {
		stats, err := c.ShowStat(ctx, backend)
		if err != nil {
			return err
		}
		i := findStat(stats, server)
		if i < 0 {
			return fmt.Errorf("%w: no server %s/%s", proxy.ErrProxy, backend, server)
		}
		if stats[i].Sessions == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s/%s has %d sessions after %s", ErrDrainTimeout, backend, server, stats[i].Sessions, timeout)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func findStat(stats []Stat, server string) int {
	for i, s := range stats {
		if s.Server == server {
			return i
		}
	}
	return -1
}

// firstLine is the first line of an answer, cut to 200 bytes, to quote in
// an error.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	if len(l) > 200 {
		l = strings.ToValidUTF8(l[:200], "") + "…"
	}
	return l
}
