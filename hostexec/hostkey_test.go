package hostexec

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// runTrue runs `true` on s through a fresh Pool with cfg.
func runTrue(t *testing.T, s *testSSHD, cfg Config) error {
	t.Helper()
	p := newPool(t, cfg)
	_, err := p.Run(testCtx(t, 15*time.Second), s.Host(), []string{"true"}, RunOptions{})
	return err
}

func TestPool_UnknownHostRefused(t *testing.T) {
	s := startSSHD(t)
	cfg := s.Config()
	cfg.KnownHosts = []string{filepath.Join(t.TempDir(), "missing_known_hosts")}
	err := runTrue(t, s, cfg)
	if !errors.Is(err, ErrUnknownHost) {
		t.Fatalf("want ErrUnknownHost, got %v", err)
	}
	// The message is the operator's only clue: it must name the host and
	// the fingerprint seen.
	for _, want := range []string{"127.0.0.1:" + itoa(s.Port), ssh.FingerprintSHA256(s.HostKey.pub)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if _, statErr := os.Stat(cfg.KnownHosts[0]); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("strict mode must not write known_hosts (stat: %v)", statErr)
	}
}

func TestPool_AcceptNewRecordsFirstSeenKey(t *testing.T) {
	s := startSSHD(t)
	kh := filepath.Join(t.TempDir(), "ssh", "known_hosts") // directory created too
	cfg := s.Config()
	cfg.KnownHosts, cfg.AcceptNew = []string{kh}, true
	if err := runTrue(t, s, cfg); err != nil {
		t.Fatalf("accept-new: %v", err)
	}
	data, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	want := knownhosts.Line([]string{s.HostPort()}, s.HostKey.pub) + "\n"
	if string(data) != want {
		t.Errorf("known_hosts = %q, want %q", data, want)
	}
	// A strict pool now trusts the recorded key.
	cfg.AcceptNew = false
	if err := runTrue(t, s, cfg); err != nil {
		t.Errorf("strict after accept-new: %v", err)
	}
	// accept-new never overrides a changed key.
	other := newKeyPair(t)
	os.WriteFile(kh, []byte(knownhosts.Line([]string{s.HostPort()}, other.pub)+"\n"), 0o600)
	cfg.AcceptNew = true
	if err := runTrue(t, s, cfg); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("accept-new with a changed key: want ErrHostKeyMismatch, got %v", err)
	}
}

func TestPool_ChangedHostKeyRefused(t *testing.T) {
	s := startSSHD(t)
	other := newKeyPair(t)
	kh := writeFile(t, filepath.Join(t.TempDir(), "known_hosts"), []byte(
		"# comment\n"+
			knownhosts.Line([]string{"unrelated.example"}, s.HostKey.pub)+"\n"+
			knownhosts.Line([]string{s.HostPort()}, other.pub)+"\n"), 0o600)
	cfg := s.Config()
	cfg.KnownHosts = []string{kh}
	err := runTrue(t, s, cfg)
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("want ErrHostKeyMismatch, got %v", err)
	}
	if errors.Is(err, ErrUnknownHost) {
		t.Errorf("a changed key is not an unknown host: %v", err)
	}
	for _, want := range []string{ssh.FingerprintSHA256(s.HostKey.pub), kh + ":3", "127.0.0.1:" + itoa(s.Port)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestPool_KnownHostsFormats(t *testing.T) {
	s := startSSHD(t)
	ca := newKeyPair(t)
	tests := []struct {
		name    string
		line    func(s *testSSHD) string
		wantErr error
	}{
		{"plain [host]:port", func(s *testSSHD) string { return knownhosts.Line([]string{s.HostPort()}, s.HostKey.pub) }, nil},
		{"hashed", func(s *testSSHD) string {
			return knownhosts.Line([]string{knownhosts.HashHostname(s.HostPort())}, s.HostKey.pub)
		}, nil},
		{"wildcard pattern", func(s *testSSHD) string {
			return "[127.0.0.*]:" + itoa(s.Port) + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey.pub)))
		}, nil},
		{"same host, port 22 entry only", func(s *testSSHD) string {
			return knownhosts.Line([]string{"127.0.0.1"}, s.HostKey.pub)
		}, ErrUnknownHost},
		{"revoked", func(s *testSSHD) string {
			return knownhosts.Line([]string{s.HostPort()}, s.HostKey.pub) + "\n@revoked * " +
				strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey.pub)))
		}, ErrHostKeyRevoked},
		{"cert-authority without host cert", func(s *testSSHD) string {
			return "@cert-authority * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.pub)))
		}, ErrUnknownHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kh := writeFile(t, filepath.Join(t.TempDir(), "known_hosts"), []byte(tt.line(s)+"\n"), 0o600)
			cfg := s.Config()
			cfg.KnownHosts = []string{kh}
			err := runTrue(t, s, cfg)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("want %v, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestPool_CertAuthority(t *testing.T) {
	ca, otherCA := newKeyPair(t), newKeyPair(t)
	var hostKey keyPair
	s := startSSHDWithCert(t, ca, &hostKey)
	caLine := func(k keyPair) string {
		return "@cert-authority [127.0.0.1]:" + itoa(s.Port) + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.pub))) + "\n"
	}
	tests := []struct {
		name    string
		content string
		wantErr error
	}{
		{"trusted CA, no plain key", caLine(ca), nil},
		{"CA key @revoked", caLine(ca) + "@revoked * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.pub))) + "\n", ErrHostKeyRevoked},
		{"other CA", caLine(otherCA), ErrUnknownHost},
		{"other CA, plain key known", caLine(otherCA) + knownhosts.Line([]string{s.HostPort()}, s.HostKey.pub) + "\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kh := writeFile(t, filepath.Join(t.TempDir(), "known_hosts"), []byte(tt.content), 0o600)
			cfg := s.Config()
			cfg.KnownHosts = []string{kh}
			err := runTrue(t, s, cfg)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("want %v, got %v", tt.wantErr, err)
			}
		})
	}
}

// startSSHDWithCert starts an sshd whose host key is certified by ca for
// 127.0.0.1.
func startSSHDWithCert(t *testing.T, ca keyPair, hostKey *keyPair) *testSSHD {
	t.Helper()
	return startSSHD(t, func(dir string, cfg *strings.Builder) {
		// The host key is generated before options run; sign it here.
		data, err := os.ReadFile(filepath.Join(dir, "host_ed25519"))
		if err != nil {
			panic(err)
		}
		sg, err := ssh.ParsePrivateKey(data)
		if err != nil {
			panic(err)
		}
		*hostKey = keyPair{signer: sg, pub: sg.PublicKey()}
		withHostCert(ca, hostKey, "127.0.0.1")(dir, cfg)
	})
}
