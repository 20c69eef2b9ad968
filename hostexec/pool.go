package hostexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/internal/fence"

	"golang.org/x/crypto/ssh"

	"github.com/capstan-dev/capstan/internal/redact"
)

// maxSessionsPerConn matches OpenSSH's default MaxSessions: more concurrent
// sessions on one connection are refused by sshd, so the Pool queues them.
const maxSessionsPerConn = 10

// Pool runs commands on many hosts over SSH. It keeps one SSH connection
// (one TCP connection) per host and opens one session per command on it;
// a broken connection is dropped and re-dialled by the next call. Jump
// hosts are pooled like any other host and shared by their targets.
//
// All methods are safe for concurrent use. Errors name the host and wrap
// one of the Err* sentinels, a context error, or *ExitError.
type Pool struct {
	cfg      Config
	log      *slog.Logger
	red      *redact.Redactor
	keys     *hostKeys
	signers  *signers
	sshCfgs  []*sshConfig
	dialSem  chan struct{}
	now      func() time.Time
	mu       sync.Mutex
	closed   bool
	conns    map[string]*conn
	counters map[string]*counters

	testHookDial func(delta int) // called with +1/-1 around each dial slot
}

// conn is the pooled connection of one host.
type conn struct {
	dialing  chan struct{} // 1-slot lock held while dialling
	sessions chan struct{} // bounds concurrent sessions (maxSessionsPerConn)
	mu       sync.Mutex
	client   *link // nil when not connected
}

// New returns a Pool for cfg. It loads the identities, ssh_config files and
// known_hosts files once (known_hosts is re-read when it changes); it does
// not connect to anything. Errors wrap ErrConfig.
func New(cfg Config) (*Pool, error) {
	p := &Pool{
		cfg:      cfg,
		red:      cfg.Redactor,
		now:      time.Now,
		conns:    map[string]*conn{},
		counters: map[string]*counters{},
	}
	for _, k := range cfg.KeyData {
		p.red = p.red.With(k)
	}
	p.red = p.red.With(string(cfg.Passphrase))
	p.cfg.Redactor = p.red
	p.log = p.red.Logger(cfg.Logger)
	p.cfg.Logger = p.log
	if p.cfg.MaxDials <= 0 {
		p.cfg.MaxDials = DefaultMaxDials
	}
	if p.cfg.KeepaliveInterval == 0 {
		p.cfg.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if p.cfg.KeepaliveMax <= 0 {
		p.cfg.KeepaliveMax = DefaultKeepaliveMax
	}
	if p.cfg.ConnectTimeout <= 0 {
		p.cfg.ConnectTimeout = DefaultConnectTimeout
	}
	p.dialSem = make(chan struct{}, p.cfg.MaxDials)
	if cfg.Dials != nil {
		p.dialSem = cfg.Dials.sem
	}
	for _, f := range cfg.SSHConfig {
		sc, err := parseSSHConfigFile(p.cfg.expand(f))
		if err != nil {
			return nil, err
		}
		p.sshCfgs = append(p.sshCfgs, sc)
	}
	var err error
	if p.signers, err = p.cfg.loadSigners(); err != nil {
		return nil, err
	}
	if p.keys, err = newHostKeys(p.cfg.knownHostsFiles(), cfg.AcceptNew); err != nil {
		return nil, err
	}
	if _, err := p.keys.callback(); err != nil {
		return nil, err
	}
	if cfg.Proxy != "" {
		if _, err := ParseHost(cfg.Proxy); err != nil {
			return nil, fmt.Errorf("ssh.proxy: %w", err)
		}
	}
	return p, nil
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Resolve returns h with every unset field filled in from the Config and
// ssh_config (see Host). The Pool resolves hosts itself; Resolve shows what
// it will connect to.
func (p *Pool) Resolve(h Host) (Host, error) {
	return p.cfg.resolve(h, p.sshCfgs, 0)
}

// Close closes every connection. Calls after Close fail with ErrClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*conn{}
	p.mu.Unlock()
	for _, c := range conns {
		if l := c.get(); l != nil {
			c.drop(l, nil)
		}
	}
	return nil
}

func (p *Pool) entry(h Host) (*conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%s: %w", h, ErrClosed)
	}
	k := h.key()
	c := p.conns[k]
	if c == nil {
		c = &conn{dialing: make(chan struct{}, 1), sessions: make(chan struct{}, maxSessionsPerConn)}
		p.conns[k] = c
	}
	return c, nil
}

// client returns the connected client of resolved host h, dialling if
// needed. Concurrent callers for one host share one dial.
func (p *Pool) client(ctx context.Context, h Host) (*link, *conn, error) {
	c, err := p.entry(h)
	if err != nil {
		return nil, nil, err
	}
	if cl := c.get(); cl != nil {
		return cl, c, nil
	}
	select {
	case c.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, h, ctx.Err())
	}
	defer func() { <-c.dialing }()
	if cl := c.get(); cl != nil {
		return cl, c, nil
	}
	cnt := p.counter(h)
	cnt.dials.Add(1)
	start := p.now()
	l, err := p.dial(ctx, h)
	if err != nil {
		cnt.dialFailures.Add(1)
		p.log.Debug("ssh dial failed", "host", h.String(), "duration", p.now().Sub(start), "err", err)
		return nil, nil, err
	}
	p.log.Debug("ssh connected", "host", h.String(), "duration", p.now().Sub(start))
	// Publish under p.mu so that Close either sees the client or we see
	// that Close ran during the dial.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.Close()
		return nil, nil, fmt.Errorf("%s: %w", h, ErrClosed)
	}
	c.mu.Lock()
	c.client = l
	c.mu.Unlock()
	p.mu.Unlock()
	go func() {
		err := l.Wait()
		close(l.done)
		if c.drop(l, nil) {
			p.log.Debug("ssh connection closed", "host", h.String(), "err", err)
		}
	}()
	if p.cfg.KeepaliveInterval > 0 {
		go p.keepalive(c, l, h)
	}
	return l, c, nil
}

func (c *conn) get() *link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

// drop forgets l (if it is still the current connection) and closes it,
// recording cause (if non-nil) as the reason. It reports whether l was
// current.
func (c *conn) drop(l *link, cause error) bool {
	c.mu.Lock()
	cur := c.client == l
	if cur {
		c.client = nil
	}
	c.mu.Unlock()
	l.closeWith(cause)
	return cur
}

// dial connects to resolved host h, through its jump hosts if any.
func (p *Pool) dial(ctx context.Context, h Host) (*link, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, p.cfg.ConnectTimeout,
		fmt.Errorf("connect timeout %v: %w", p.cfg.ConnectTimeout, context.DeadlineExceeded))
	defer cancel()
	name := h.String()

	var jump *link
	if n := len(h.ProxyJump); n > 0 {
		j := h.ProxyJump[n-1]
		j.ProxyJump = h.ProxyJump[:n-1]
		var err error
		if jump, _, err = p.client(ctx, j); err != nil {
			return nil, fmt.Errorf("%s: jump host: %w", name, err)
		}
	}

	// The bound covers TCP connect, handshake and auth, not the jump host's
	// own dial (that holds its own slot), so a jump chain cannot deadlock.
	select {
	case p.dialSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: waiting for a dial slot: %w", ErrUnreachable, name, ctxErr(ctx))
	}
	defer func() { <-p.dialSem }()
	if p.testHookDial != nil { // counted out before the slot is given back
		p.testHookDial(1)
		defer p.testHookDial(-1)
	}

	var nc net.Conn
	var err error
	if jump != nil {
		nc, err = jump.DialContext(ctx, "tcp", h.hostPort())
	} else {
		d := net.Dialer{KeepAlive: -1} // SSH keepalives instead
		nc, err = d.DialContext(ctx, "tcp", h.hostPort())
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, name, ctxErr(ctx))
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, name, err)
	}
	// Abort the handshake when ctx ends.
	stop := context.AfterFunc(ctx, func() { nc.Close() })

	auth, agentConn, err := p.authMethods(h)
	if err != nil {
		stop()
		nc.Close()
		return nil, err
	}
	if agentConn != nil {
		defer agentConn.Close()
	}
	algos, err := p.keys.algorithms(h.hostPort())
	if err != nil {
		stop()
		nc.Close()
		return nil, err
	}
	var hostKeyErr error
	cfg := &ssh.ClientConfig{
		User: h.User,
		Auth: auth,
		HostKeyCallback: func(_ string, remote net.Addr, key ssh.PublicKey) error {
			hostKeyErr = p.keys.check(name, h.hostPort(), remote, key)
			return hostKeyErr
		},
		HostKeyAlgorithms: algos,
		ClientVersion:     "SSH-2.0-capstan",
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, h.hostPort(), cfg)
	if !stop() {
		// ctx ended during the handshake; nc is closed.
		if err == nil {
			sc.Close()
		}
		return nil, fmt.Errorf("%w: %s: ssh handshake: %w", ErrUnreachable, name, ctxErr(ctx))
	}
	if err != nil {
		nc.Close()
		switch {
		case hostKeyErr != nil:
			return nil, hostKeyErr
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%w: %s as %s: %w", ErrAuth, name, h.User, err)
		default:
			return nil, fmt.Errorf("%w: %s: ssh handshake: %w", ErrUnreachable, name, err)
		}
	}
	return &link{Client: ssh.NewClient(sc, chans, reqs), via: jump, done: make(chan struct{})}, nil
}

// session opens a session on h's connection, re-dialling once if the pooled
// connection turns out to be dead. release must be called when the session
// ends.
func (p *Pool) session(ctx context.Context, h Host) (s *ssh.Session, l *link, c *conn, release func(), err error) {
	if err := fence.Check(ctx); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%s: %w", h, err)
	}
	for attempt := 0; ; attempt++ {
		l, c, err = p.client(ctx, h)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		select {
		case c.sessions <- struct{}{}:
		case <-ctx.Done():
			return nil, nil, nil, nil, fmt.Errorf("%s: waiting for a session slot: %w", h, ctx.Err())
		}
		release = func() { <-c.sessions }
		s, err = newSession(ctx, l.Client)
		if err == nil {
			return s, l, c, release, nil
		}
		release()
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) || ctx.Err() != nil { // refused by the server; the connection is fine
			return nil, nil, nil, nil, fmt.Errorf("%s: open session: %w", h, err)
		}
		c.drop(l, nil)
		if attempt > 0 || ctx.Err() != nil {
			return nil, nil, nil, nil, fmt.Errorf("%w: %s: open session: %w", ErrConnectionLost, h, l.lost(err))
		}
		p.log.Debug("ssh connection dead, re-dialling", "host", h.String(), "err", err)
	}
}

// newSession opens a session, retrying for a while when sshd refuses it:
// sshd frees a closed session's slot (MaxSessions) only after a moment, so
// a burst of short commands can briefly find every slot taken. It returns
// when ctx ends even if the server never answers (a session that opens
// later is closed).
func newSession(ctx context.Context, cl *ssh.Client) (*ssh.Session, error) {
	delay := 5 * time.Millisecond
	for i := 0; ; i++ {
		type result struct {
			s   *ssh.Session
			err error
		}
		ch := make(chan result, 1)
		go func() {
			s, err := cl.NewSession()
			ch <- result{s, err}
		}()
		var r result
		select {
		case r = <-ch:
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.s != nil {
					r.s.Close()
				}
			}()
			return nil, ctx.Err()
		}
		var oce *ssh.OpenChannelError
		if r.err == nil || !errors.As(r.err, &oce) || i == 10 {
			return r.s, r.err
		}
		select {
		case <-ctx.Done():
			return nil, r.err
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}
