package hostexec

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"
)

// TestPool_ConnectTimeout: a host that accepts TCP and never speaks fails
// with ErrUnreachable at ConnectTimeout, however long the ctx allows.
func TestPool_ConnectTimeout(t *testing.T) {
	fs := newFakeServer(t) // only for its key; the target is a black hole
	cfg := fs.config(t)
	cfg.ConnectTimeout = 300 * time.Millisecond
	p := newPool(t, cfg)
	start := time.Now()
	_, err := p.Run(testCtx(t, time.Minute), Host{Addr: "127.0.0.1", Port: blackhole(t)}, []string{"true"}, RunOptions{})
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want ErrUnreachable and DeadlineExceeded, got %v", err)
	}
	if err != nil && !strings.Contains(err.Error(), "connect timeout 300ms") {
		t.Errorf("error does not say which timeout ran out: %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("returned after %v for a 300ms ConnectTimeout", took)
	}
}

// TestPool_ConnectTimeoutThroughJump: ConnectTimeout covers the handshake
// with a target reached through a jump host.
func TestPool_ConnectTimeoutThroughJump(t *testing.T) {
	jump := startSSHD(t)
	cfg := jump.Config()
	cfg.Proxy = "root@127.0.0.1:" + itoa(jump.Port)
	// Long enough for the jump host's own handshake on a loaded machine;
	// the black hole never answers, so it still times out.
	cfg.ConnectTimeout = 3 * time.Second
	p := newPool(t, cfg)
	start := time.Now()
	_, err := p.Run(testCtx(t, time.Minute), Host{Addr: "127.0.0.1", Port: blackhole(t)}, []string{"true"}, RunOptions{})
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want ErrUnreachable and DeadlineExceeded, got %v", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("returned after %v for a 3s ConnectTimeout", took)
	}
	// The jump host's own connection is fine and stays pooled.
	if _, err := p.Run(testCtx(t, 10*time.Second), jump.Host(), []string{"true"}, RunOptions{}); err != nil {
		t.Errorf("jump host itself: %v", err)
	}
	if st := p.Stats()[jump.Host().String()]; st.Dials != 1 {
		t.Errorf("jump host Stats = %+v, want one dial", st)
	}
}

// TestPool_CommandTimeout: Run and Upload stop at CommandTimeout with
// ErrTimeout naming the host; Stream is not bounded by it; the connection
// stays usable.
func TestPool_CommandTimeout(t *testing.T) {
	s := startSSHD(t)
	cfg := s.Config()
	cfg.CommandTimeout = 400 * time.Millisecond
	p := newPool(t, cfg)
	ctx := testCtx(t, 30*time.Second)

	start := time.Now()
	_, err := p.Run(ctx, s.Host(), []string{"sleep", "5"}, RunOptions{})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run: want ErrTimeout and DeadlineExceeded, got %v", err)
	}
	if err != nil && !strings.Contains(err.Error(), s.Host().String()) {
		t.Errorf("Run: error does not name the host: %v", err)
	}
	if took := time.Since(start); took > 400*time.Millisecond+cancelGrace+time.Second {
		t.Errorf("Run returned after %v", took)
	}

	pr, pw := io.Pipe() // stdin that never ends
	defer pw.Close()
	if err := p.upload(ctx, s.Host(), filepath.Join(t.TempDir(), "f"), 0o600, pr); !errors.Is(err, ErrTimeout) {
		t.Errorf("Upload: want ErrTimeout, got %v", err)
	}

	var out strings.Builder
	if err := p.Stream(ctx, s.Host(), []string{"sh", "-c", "sleep 1; echo done"}, &out, nil, RunOptions{}); err != nil || out.String() != "done\n" {
		t.Errorf("Stream longer than CommandTimeout: %q, %v", out.String(), err)
	}
	if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{}); err != nil {
		t.Errorf("after a timeout: %v", err)
	}
	if st := p.Stats()[s.Host().String()]; st.Dials != 1 {
		t.Errorf("a command timeout must not cost the connection: Stats = %+v", st)
	}
}

// TestPool_HostKeyRefusedIsPermanent: every host key refusal is an
// ErrHostKey, never an ErrUnreachable, and a call dials once (no retry).
func TestPool_HostKeyRefusedIsPermanent(t *testing.T) {
	fs := newFakeServer(t)
	other := newKeyPair(t)
	hp := "[127.0.0.1]:" + itoa(fs.port)
	for _, tc := range []struct {
		name      string
		knownHost string
		want      error
	}{
		{"mismatch", knownhosts.Line([]string{hp}, other.pub), ErrHostKeyMismatch},
		{"unknown", knownhosts.Line([]string{"elsewhere.example"}, fs.hostKey.pub), ErrUnknownHost},
		{"revoked", "@revoked " + knownhosts.Line([]string{hp}, fs.hostKey.pub), ErrHostKeyRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fs.config(t)
			cfg.KnownHosts = []string{writeFile(t, filepath.Join(t.TempDir(), "kh"), []byte(tc.knownHost+"\n"), 0o600)}
			p := newPool(t, cfg)
			_, err := p.Run(testCtx(t, 10*time.Second), fs.host(), []string{"true"}, RunOptions{})
			if !errors.Is(err, ErrHostKey) || !errors.Is(err, tc.want) || errors.Is(err, ErrUnreachable) {
				t.Errorf("want ErrHostKey and %v (not ErrUnreachable), got %v", tc.want, err)
			}
			if st := p.Stats()[fs.host().String()]; st.Dials != 1 {
				t.Errorf("Stats = %+v, want exactly one dial", st)
			}
		})
	}
}

func TestErrHostKey_Sentinels(t *testing.T) {
	for _, e := range []error{ErrUnknownHost, ErrHostKeyMismatch, ErrHostKeyRevoked} {
		if !errors.Is(e, ErrHostKey) {
			t.Errorf("%v is not an ErrHostKey", e)
		}
		if errors.Is(ErrHostKey, e) {
			t.Errorf("ErrHostKey is %v", e)
		}
	}
	if errors.Is(ErrUnknownHost, ErrHostKeyMismatch) || errors.Is(ErrHostKeyMismatch, ErrHostKeyRevoked) {
		t.Error("host key sentinels must stay distinct")
	}
}
