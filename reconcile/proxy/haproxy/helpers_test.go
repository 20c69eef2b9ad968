package haproxy

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/testport"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s mismatch:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// haproxyBin returns the haproxy binary, skipping the test when it is not
// installed, except under CI=true where a missing binary is a failure.
func haproxyBin(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy is not installed (CI=true: real-proxy tests must run; apt-get install haproxy)")
	}
	t.Skip("haproxy is not installed; apt-get install haproxy to run the real-proxy tests")
	return ""
}

func freePort(t *testing.T) int { return testport.Free(t) }

// haproxyProc is a real haproxy master-worker process on loopback.
type haproxyProc struct {
	t      *testing.T
	bin    string
	cfg    string
	socket string
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	logf   string // haproxy's output
}

func (h *haproxyProc) output() string {
	b, _ := os.ReadFile(h.logf)
	return string(b)
}

func (h *haproxyProc) start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		return errors.New("haproxy already running")
	}
	os.Remove(h.socket)
	logf, err := os.OpenFile(h.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(h.bin, "-W", "-db", "-f", h.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	h.cmd, h.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(h.done)
	// Wait (bounded) for the stats socket to answer.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", h.socket); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-h.done:
			return fmt.Errorf("haproxy exited: %s", h.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("haproxy socket %s did not come up", h.socket)
}

// stop stops haproxy (SIGTERM to its process group) and waits for it.
func (h *haproxyProc) stop() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func (h *haproxyProc) signal(sig syscall.Signal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return errors.New("haproxy not running")
	}
	return h.cmd.Process.Signal(sig)
}

// localHost is the host as the driver sees it, played on this machine:
// file commands run for real, docker commands drive the local haproxy, and
// Dial only reaches the stats socket and 127.0.0.1.
type localHost struct {
	t      *testing.T
	h      *haproxyProc
	socket string
	mu     sync.Mutex
	calls  [][]string
}

func (l *localHost) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	l.mu.Lock()
	l.calls = append(l.calls, argv)
	l.mu.Unlock()
	if host != "lab1" {
		return nil, fmt.Errorf("unexpected host %q", host)
	}
	if len(argv) > 2 && argv[0] == "sh" && argv[2] == bootScript {
		// The boot script's docker parts, emulated; its directories and
		// configuration are real local files.
		l.h.mu.Lock()
		state := "missing"
		if l.h.cmd != nil {
			state = "true"
		}
		l.h.mu.Unlock()
		cfgdir, sockdir, cfg := argv[6], argv[7], argv[8]
		for _, d := range []string{cfgdir, sockdir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
		}
		cur, _ := os.ReadFile(cfg)
		return append([]byte(state+"\n"+bootMarker+"\n"), cur...), nil
	}
	if argv[0] == "docker" {
		switch strings.Join(argv[1:3], " ") {
		case "run --name":
			return []byte("c0ffee\n"), l.h.start()
		case "kill --signal":
			return nil, l.h.signal(syscall.SIGUSR2)
		}
		return nil, fmt.Errorf("unexpected docker command %q", argv)
	}
	switch {
	case argv[0] == "cat":
	case argv[0] == "sh" && len(argv) > 2 && argv[2] == writeArgs(Settings{})[2]:
	default:
		return nil, fmt.Errorf("unexpected command %q", argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, stderr.String())
	}
	return out, nil
}

func (l *localHost) Dial(ctx context.Context, host, network, addr string) (net.Conn, error) {
	if host != "lab1" {
		return nil, fmt.Errorf("unexpected host %q", host)
	}
	switch {
	case network == "unix" && addr == l.socket:
	case network == "tcp" && strings.HasPrefix(addr, "127.0.0.1:"):
	default:
		l.t.Errorf("dial %s %s: only the stats socket and 127.0.0.1 are allowed", network, addr)
		return nil, errors.New("refused")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
