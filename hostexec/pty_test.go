package hostexec

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// termOutput collects a terminal's output and lets a test wait for text.
type termOutput struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newTermOutput() *termOutput { return &termOutput{changed: make(chan struct{}, 1)} }

func (o *termOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.b.Write(p)
	o.mu.Unlock()
	select {
	case o.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (o *termOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// waitFor waits until the output contains s, calling poke (if non-nil)
// every 200 ms meanwhile.
func (o *termOutput) waitFor(t *testing.T, s string, poke func()) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(o.String(), s) {
		select {
		case <-o.changed:
		case <-tick.C:
			if poke != nil {
				poke()
			}
		case <-deadline:
			t.Fatalf("terminal output never contained %q; got %q", s, o.String())
		}
	}
}

func TestPool_InteractiveTerminal(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 30*time.Second)
	in, typed := io.Pipe()
	defer typed.Close()
	out := newTermOutput()
	resize := make(chan WindowSize, 1)
	// Each line typed prints the terminal's size; "int" arms a SIGINT
	// trap and waits.
	script := `tty; echo "TERM=$TERM"
while read -r line; do
  case "$line" in
  int) trap 'echo caught-INT; exit 7' INT; echo armed; while :; do sleep 0.1; done;;
  *) echo "size $(stty size)";;
  esac
done`
	errc := make(chan error, 1)
	go func() {
		errc <- p.Interactive(ctx, s.Host(), []string{"sh", "-c", script}, Terminal{
			In: in, Out: out, Term: "vt100", Size: WindowSize{Cols: 100, Rows: 30}, Resize: resize,
		})
	}()
	out.waitFor(t, "TERM=vt100", nil)
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Errorf("the command has no terminal: %q", out.String())
	}
	io.WriteString(typed, "a\n")
	out.waitFor(t, "size 30 100", nil)

	resize <- WindowSize{Cols: 132, Rows: 40}
	out.waitFor(t, "size 40 132", func() { io.WriteString(typed, "b\n") })

	io.WriteString(typed, "int\n")
	out.waitFor(t, "armed", nil)
	io.WriteString(typed, "\x03") // Ctrl-C as a raw terminal sends it
	out.waitFor(t, "caught-INT", nil)
	var ee *ExitError
	select {
	case err := <-errc:
		if !errors.As(err, &ee) || ee.Code != 7 {
			t.Fatalf("want ExitError 7 after Ctrl-C, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Interactive did not return after the command exited")
	}
	if !strings.Contains(out.String(), "\r\n") {
		t.Errorf("output did not go through a terminal (no CR LF): %q", out.String())
	}
}

func TestPool_InteractiveExitCodeAndCancel(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 30*time.Second)
	out := newTermOutput()
	if err := p.Interactive(ctx, s.Host(), []string{"sh", "-c", "echo hi; exit 0"}, Terminal{Out: out}); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	if !strings.Contains(out.String(), "hi\r\n") {
		t.Errorf("output %q", out.String())
	}
	out = newTermOutput()
	if err := p.Interactive(ctx, s.Host(), []string{"sh", "-c", "stty size; exit 3"}, Terminal{Out: out}); err == nil {
		t.Fatal("exit 3: no error")
	} else if ee := (*ExitError)(nil); !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("exit 3: %v", err)
	}
	if !strings.Contains(out.String(), "24 80") {
		t.Errorf("default size: %q", out.String())
	}

	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	out = newTermOutput()
	go func() {
		errc <- p.Interactive(cctx, s.Host(), []string{"sh", "-c", "echo started; sleep 60"}, Terminal{Out: out})
	}()
	out.waitFor(t, "started", nil)
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err == nil || time.Since(start) > 5*time.Second {
			t.Errorf("cancel: err %v after %v", err, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Interactive did not return after cancel")
	}
}

func TestPool_InteractiveTerminalRefused(t *testing.T) {
	s := startSSHD(t, func(_ string, cfg *strings.Builder) { cfg.WriteString("PermitTTY no\n") })
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)
	err := p.Interactive(ctx, s.Host(), []string{"sh", "-c", "echo ran"}, Terminal{})
	var ee *ExitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "terminal refused") || !strings.Contains(err.Error(), s.Host().String()) {
		t.Fatalf("PermitTTY no: want a refused-terminal error naming the host, got %v", err)
	}
	// The connection is fine: a plain command still runs on it.
	if res, err := p.Run(ctx, s.Host(), []string{"echo", "ok"}, RunOptions{}); err != nil || string(res.Stdout) != "ok\n" {
		t.Errorf("after a refused terminal: %q, %v", res.Stdout, err)
	}
}
