package hostexec

// Benchmarks. They run against the lab when it can run here (the same
// hosts the e2e tests use), else against loopback sshds; set
// CAPSTAN_BENCH_TARGET=loopback to force the latter. Run:
//
//	go test ./hostexec -run '^$' -bench . -benchtime 100x

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

type benchTarget struct {
	hosts []Host
	cfg   Config
}

func benchTargets(b *testing.B, n int) benchTarget {
	b.Helper()
	if os.Getenv("CAPSTAN_BENCH_TARGET") != "loopback" && lab.Check() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		l, err := lab.Up(ctx, lab.Options{Hosts: n})
		if err != nil {
			b.Fatalf("lab up: %v", err)
		}
		t := benchTarget{cfg: labConfig(l)}
		for i := range n {
			t.hosts = append(t.hosts, Host{Addr: l.Hosts[i].Addr, Port: 22, User: "root"})
		}
		b.Logf("target: lab hosts %v", t.hosts)
		return t
	}
	var t benchTarget
	t.cfg = Config{Home: b.TempDir()}
	for range n {
		s := startSSHD(b)
		t.hosts = append(t.hosts, s.Host())
		t.cfg.Keys = append(t.cfg.Keys, s.Identity)
		t.cfg.KnownHosts = append(t.cfg.KnownHosts, s.KnownHosts)
	}
	b.Logf("target: loopback sshd %v", t.hosts)
	return t
}

// openSSH runs the OpenSSH client against h with the target's key and
// known_hosts, strict host key checking, and extra options.
func (t benchTarget) openSSH(h Host, extra ...string) *exec.Cmd {
	args := []string{"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
		"-o", "UserKnownHostsFile=" + t.cfg.KnownHosts[0], "-i", t.cfg.Keys[0], "-p", strconv.Itoa(h.Port)}
	for _, kh := range t.cfg.KnownHosts[1:] {
		args = append(args, "-o", "UserKnownHostsFile="+kh)
	}
	for _, k := range t.cfg.Keys[1:] {
		args = append(args, "-i", k)
	}
	args = append(args, extra...)
	args = append(args, h.User+"@"+h.Addr, "true")
	return exec.Command("ssh", args...)
}

// BenchmarkRun_WarmNoop compares a no-op command on a warm pooled
// connection with OpenSSH multiplexing over a ControlMaster, same host,
// same run.
func BenchmarkRun_WarmNoop(b *testing.B) {
	t := benchTargets(b, 1)
	h := t.hosts[0]
	b.Run("capstan", func(b *testing.B) {
		p := newPool(b, t.cfg)
		ctx := context.Background()
		if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("openssh-controlmaster", func(b *testing.B) {
		if _, err := exec.LookPath("ssh"); err != nil {
			b.Skip("no OpenSSH client")
		}
		cp := filepath.Join(b.TempDir(), "cm")
		mux := []string{"-o", "ControlMaster=auto", "-o", "ControlPath=" + cp, "-o", "ControlPersist=60"}
		if out, err := t.openSSH(h, mux...).CombinedOutput(); err != nil {
			b.Fatalf("ssh: %v: %s", err, out)
		}
		defer exec.Command("ssh", "-o", "ControlPath="+cp, "-O", "exit", "x").Run()
		b.ResetTimer()
		for b.Loop() {
			if out, err := t.openSSH(h, mux...).CombinedOutput(); err != nil {
				b.Fatalf("ssh: %v: %s", err, out)
			}
		}
	})
}

// BenchmarkConnect measures connection setup: TCP, key exchange, host key
// check, auth and one no-op command, against OpenSSH doing the same.
func BenchmarkConnect(b *testing.B) {
	t := benchTargets(b, 1)
	h := t.hosts[0]
	b.Run("capstan", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			p, err := New(t.cfg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
				b.Fatal(err)
			}
			p.Close()
		}
	})
	b.Run("openssh", func(b *testing.B) {
		if _, err := exec.LookPath("ssh"); err != nil {
			b.Skip("no OpenSSH client")
		}
		for b.Loop() {
			if out, err := t.openSSH(h, "-o", "ControlMaster=no", "-o", "ControlPath=none").CombinedOutput(); err != nil {
				b.Fatalf("ssh: %v: %s", err, out)
			}
		}
	})
}

// BenchmarkFanOut3 runs a no-op on 3 hosts in parallel: on warm
// connections, and from a fresh Pool (3 parallel dials).
func BenchmarkFanOut3(b *testing.B) {
	t := benchTargets(b, 3)
	fan := func(b *testing.B, p *Pool) {
		var wg sync.WaitGroup
		errs := make([]error, len(t.hosts))
		for i, h := range t.hosts {
			wg.Go(func() { _, errs[i] = p.Run(context.Background(), h, []string{"true"}, RunOptions{}) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("warm", func(b *testing.B) {
		p := newPool(b, t.cfg)
		fan(b, p)
		b.ResetTimer()
		for b.Loop() {
			fan(b, p)
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			p, err := New(t.cfg)
			if err != nil {
				b.Fatal(err)
			}
			fan(b, p)
			p.Close()
		}
	})
}
