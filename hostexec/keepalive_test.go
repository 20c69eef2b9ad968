package hostexec

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// freezeProxy forwards TCP to a backend; freeze makes every existing
// connection go silent (no bytes either way, no FIN), like a host that
// vanished from the network.
type freezeProxy struct {
	l      net.Listener
	mu     sync.Mutex
	frozen chan struct{}
}

func newFreezeProxy(t *testing.T, backend string) *freezeProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp := &freezeProxy{l: l, frozen: make(chan struct{})}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			fp.mu.Lock()
			frozen := fp.frozen
			fp.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					select {
					case <-frozen:
						<-make(chan struct{}) // swallow everything, forever (until the test ends)
					default:
					}
					if n > 0 {
						dst.Write(buf[:n])
					}
					if err != nil {
						dst.Close()
						return
					}
				}
			}
			go pipe(b, c)
			go pipe(c, b)
			t.Cleanup(func() { c.Close(); b.Close() })
		}
	}()
	return fp
}

func (fp *freezeProxy) port() int { return fp.l.Addr().(*net.TCPAddr).Port }

// freeze silences the connections made so far; later ones work.
func (fp *freezeProxy) freeze() {
	fp.mu.Lock()
	close(fp.frozen)
	fp.frozen = make(chan struct{})
	fp.mu.Unlock()
}

// TestPool_KeepaliveDropsSilentConnection: a peer that goes silent (no
// bytes, no FIN, no RST) is noticed by keepalives; the command running on
// it and a Dial channel on it fail at once, and the next command re-dials.
func TestPool_KeepaliveDropsSilentConnection(t *testing.T) {
	s := startSSHD(t)
	fp := newFreezeProxy(t, "127.0.0.1:"+itoa(s.Port))
	// known_hosts entry for the proxy port
	cfg := s.Config()
	const interval = 200 * time.Millisecond
	cfg.KeepaliveInterval, cfg.KeepaliveMax = interval, 3
	kh := writeFile(t, t.TempDir()+"/kh", []byte("[127.0.0.1]:"+itoa(fp.port())+" "+string(ssh.MarshalAuthorizedKey(s.HostKey.pub))), 0o600)
	cfg.KnownHosts = []string{kh}
	p := newPool(t, cfg)
	h := Host{Addr: "127.0.0.1", Port: fp.port()}
	ctx := testCtx(t, 20*time.Second)
	if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	r, _ := p.Resolve(h)
	c, _ := p.entry(r)
	if c.get() == nil {
		t.Fatal("no pooled connection")
	}
	running := startSleep(t, ctx, p, h)
	dc := dialIdle(t, ctx, p, h)
	fp.freeze()
	frozen := time.Now()

	select {
	case err := <-running:
		if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrConnectionLost) {
			t.Errorf("running command: want ErrUnreachable and ErrConnectionLost, got %v", err)
		}
		// One keepalive may have been swallowed just before the freeze, so
		// the bound is max-1 intervals, not max.
		if took := time.Since(frozen); took < 2*interval {
			t.Errorf("dropped after %v: fewer than KeepaliveMax missed keepalives", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("running command did not return after the connection went silent")
	}
	if c.get() != nil {
		t.Error("the silent connection is still pooled")
	}
	read := make(chan error, 1)
	go func() { _, err := dc.Read(make([]byte, 1)); read <- err }()
	select {
	case err := <-read:
		if err == nil {
			t.Error("Dial channel on the dropped connection: read succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Error("Dial channel on the dropped connection: read still blocked")
	}
	// The next command re-dials instead of hanging on the dead connection.
	if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatalf("after keepalive drop: %v", err)
	}
	if st := p.Stats()[r.String()]; st.Dials != 2 {
		t.Errorf("Stats = %+v, want 2 dials", st)
	}
}

// startSleep starts a 30 s command on h and returns once it runs; its
// error arrives on the channel.
func startSleep(t *testing.T, ctx context.Context, p *Pool, h Host) <-chan error {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- p.Stream(ctx, h, []string{"sh", "-c", "echo started; exec sleep 30"}, pw, nil, RunOptions{})
		pw.Close()
	}()
	line := make([]byte, len("started\n"))
	if _, err := io.ReadFull(pr, line); err != nil {
		t.Fatalf("command did not start: %v", <-done)
	}
	go io.Copy(io.Discard, pr)
	return done
}

// dialIdle opens a Dial channel from h to a unix socket that accepts and
// never writes.
func dialIdle(t *testing.T, ctx context.Context, p *Pool, h Host) net.Conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "echo.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	dc, err := p.Dial(ctx, h, "unix", sock)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc
}

// TestPool_DeadlineOnSilentConnection: when the pooled connection goes
// silent before keepalive notices, a command still returns at its ctx
// deadline, whether it was starting or running.
func TestPool_DeadlineOnSilentConnection(t *testing.T) {
	s := startSSHD(t)
	fp := newFreezeProxy(t, "127.0.0.1:"+itoa(s.Port))
	cfg := s.Config()
	cfg.KeepaliveInterval = -1
	kh := writeFile(t, t.TempDir()+"/kh", []byte("[127.0.0.1]:"+itoa(fp.port())+" "+string(ssh.MarshalAuthorizedKey(s.HostKey.pub))), 0o600)
	cfg.KnownHosts = []string{kh}
	p := newPool(t, cfg)
	h := Host{Addr: "127.0.0.1", Port: fp.port()}
	if _, err := p.Run(testCtx(t, 10*time.Second), h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	running := make(chan error, 1)
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	go func() {
		_, err := p.Run(runCtx, h, []string{"sleep", "30"}, RunOptions{})
		running <- err
	}()
	time.Sleep(300 * time.Millisecond)
	fp.freeze()

	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"new command", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, err := p.Run(ctx, h, []string{"true"}, RunOptions{})
			return err
		}},
		{"running command", func() error { cancelRun(); return <-running }},
	} {
		start := time.Now()
		err := tc.run()
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			t.Errorf("%s: want a context error, got %v", tc.name, err)
		}
		if took := time.Since(start); took > 500*time.Millisecond+cancelGrace+time.Second {
			t.Errorf("%s: returned after %v", tc.name, took)
		}
	}
}

// fakeServer is an in-process SSH server that authenticates the test key,
// refuses every channel, and answers keepalive@openssh.com after delay
// (never, while delay is negative). It needs no root.
type fakeServer struct {
	port       int
	hostKey    keyPair
	client     keyPair
	delay      atomic.Int64 // nanoseconds
	keepalives atomic.Int32 // requests received
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	fs := &fakeServer{hostKey: newKeyPair(t), client: newKeyPair(t)}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if !bytes.Equal(k.Marshal(), fs.client.pub.Marshal()) {
			return nil, errors.New("unknown key")
		}
		return nil, nil
	}}
	cfg.AddHostKey(fs.hostKey.signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			go fs.serve(nc, cfg, stop)
		}
	}()
	fs.port = l.Addr().(*net.TCPAddr).Port
	return fs
}

func (fs *fakeServer) serve(nc net.Conn, cfg *ssh.ServerConfig, stop <-chan struct{}) {
	_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	go func() {
		for ch := range chans {
			ch.Reject(ssh.Prohibited, "fake server")
		}
	}()
	for req := range reqs {
		fs.keepalives.Add(1)
		d := time.Duration(fs.delay.Load())
		// Answer from a goroutine: a handler that blocks would stall
		// the connection's whole read loop, not only its keepalives.
		go func() {
			if d < 0 {
				<-stop
				return
			}
			time.Sleep(d)
			req.Reply(false, nil) // what OpenSSH answers
		}()
	}
}

// config is a Pool Config that trusts fs and authenticates to it.
func (fs *fakeServer) config(t *testing.T) Config {
	kh := writeFile(t, filepath.Join(t.TempDir(), "known_hosts"),
		[]byte(knownhosts.Line([]string{"[127.0.0.1]:" + itoa(fs.port)}, fs.hostKey.pub)+"\n"), 0o600)
	return Config{KeyData: []string{string(fs.client.pem)}, KnownHosts: []string{kh}, Home: t.TempDir()}
}

func (fs *fakeServer) host() Host { return Host{Addr: "127.0.0.1", Port: fs.port, User: "root"} }

// TestPool_KeepaliveCountsMisses: keepalive answers slower than one
// interval but within KeepaliveMax intervals keep the connection; answers
// that stop close it within about KeepaliveMax+1 intervals.
func TestPool_KeepaliveCountsMisses(t *testing.T) {
	fs := newFakeServer(t)
	const interval = 100 * time.Millisecond
	cfg := fs.config(t)
	cfg.KeepaliveInterval, cfg.KeepaliveMax = interval, 5
	p := newPool(t, cfg)
	fs.delay.Store(int64(2 * interval))
	ctx := testCtx(t, 10*time.Second)
	h, err := p.Resolve(fs.host())
	if err != nil {
		t.Fatal(err)
	}
	l, c, err := p.client(ctx, h)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	time.Sleep(15 * interval)
	if n := fs.keepalives.Load(); n < 3 {
		t.Fatalf("only %d keepalives in 15 intervals", n)
	}
	if c.get() != l {
		t.Fatalf("connection dropped although every keepalive was answered within KeepaliveMax intervals: %v", l.lost(nil))
	}

	fs.delay.Store(-1)
	stalled := time.Now()
	select {
	case <-l.done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection kept although keepalives stopped being answered")
	}
	if took := time.Since(stalled); took < 3*interval {
		t.Errorf("dropped %v after the stall, before KeepaliveMax intervals", took)
	}
	if err := l.lost(nil); !errors.Is(err, ErrUnreachable) {
		t.Errorf("cause = %v, want ErrUnreachable", err)
	}
	if c.get() != nil {
		t.Error("dead connection still pooled")
	}
	// The next call re-dials.
	fs.delay.Store(0)
	if l2, _, err := p.client(ctx, h); err != nil || l2 == l {
		t.Errorf("re-dial: %v (same link: %v)", err, l2 == l)
	}
}

// TestPool_KeepaliveThroughSilentJump: when the jump host goes silent, a
// command on a target behind it fails with ErrUnreachable, and the next
// one re-dials both.
func TestPool_KeepaliveThroughSilentJump(t *testing.T) {
	jump, target := startSSHD(t), startSSHD(t)
	fp := newFreezeProxy(t, "127.0.0.1:"+itoa(jump.Port))
	kh := writeFile(t, filepath.Join(t.TempDir(), "kh"), []byte(
		knownhosts.Line([]string{"[127.0.0.1]:" + itoa(fp.port())}, jump.HostKey.pub)+"\n"), 0o600)
	cfg := target.Config()
	cfg.Keys = []string{target.Identity, jump.Identity}
	cfg.KnownHosts = []string{target.KnownHosts, kh}
	cfg.Proxy = "root@127.0.0.1:" + itoa(fp.port())
	cfg.KeepaliveInterval, cfg.KeepaliveMax = 200*time.Millisecond, 3
	p := newPool(t, cfg)
	ctx := testCtx(t, 20*time.Second)
	running := startSleep(t, ctx, p, target.Host())
	fp.freeze()
	select {
	case err := <-running:
		if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrConnectionLost) {
			t.Errorf("want ErrUnreachable and ErrConnectionLost, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("command behind a silent jump host did not return")
	}
	if _, err := p.Run(ctx, target.Host(), []string{"true"}, RunOptions{}); err != nil {
		t.Fatalf("after the jump host was dropped: %v", err)
	}
	r, _ := p.Resolve(target.Host())
	if st := p.Stats(); st[r.String()].Dials != 2 || st[r.ProxyJump[0].String()].Dials != 2 {
		t.Errorf("want two dials each to target and jump, Stats = %+v", st)
	}
}

// TestLink_LostNamesTheJumpHostCause: a connection broken because the jump
// host's connection under it was closed reports that reason.
func TestLink_LostNamesTheJumpHostCause(t *testing.T) {
	cause := errors.New("jump keepalive lost")
	jump := &link{cause: cause}
	l := &link{via: jump}
	if got := l.lost(io.EOF); got != cause {
		t.Errorf("lost = %v, want the jump host's cause", got)
	}
	if got := (&link{via: &link{}}).lost(io.EOF); got != io.EOF {
		t.Errorf("lost without causes = %v, want the error given", got)
	}
}
