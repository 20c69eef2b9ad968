package hostexec

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
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

func TestPool_KeepaliveDropsSilentConnection(t *testing.T) {
	s := startSSHD(t)
	fp := newFreezeProxy(t, "127.0.0.1:"+itoa(s.Port))
	// known_hosts entry for the proxy port
	cfg := s.Config()
	cfg.Keepalive = 200 * time.Millisecond
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
	fp.freeze()
	deadline := time.Now().Add(3 * time.Second)
	for c.get() != nil {
		if time.Now().After(deadline) {
			t.Fatal("keepalive did not drop the silent connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The next command re-dials instead of hanging on the dead connection.
	if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatalf("after keepalive drop: %v", err)
	}
	if st := p.Stats()[r.String()]; st.Dials != 2 {
		t.Errorf("Stats = %+v, want 2 dials", st)
	}
}

// TestPool_DeadlineOnSilentConnection: when the pooled connection goes
// silent before keepalive notices, a command still returns at its ctx
// deadline, whether it was starting or running.
func TestPool_DeadlineOnSilentConnection(t *testing.T) {
	s := startSSHD(t)
	fp := newFreezeProxy(t, "127.0.0.1:"+itoa(s.Port))
	cfg := s.Config()
	cfg.Keepalive = -1
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
