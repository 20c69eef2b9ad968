package hostexec

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// startAgent serves an in-memory ssh-agent holding keys on a unix socket.
func startAgent(t *testing.T, keys ...keyPair) string {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		raw, err := ssh.ParseRawPrivateKey(k.pem)
		if err != nil {
			t.Fatal(err)
		}
		if err := kr.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
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
			go func() { agent.ServeAgent(kr, c); c.Close() }()
		}
	}()
	return sock
}

func TestPool_Auth(t *testing.T) {
	s := startSSHD(t)
	wrong := newKeyPair(t)
	const pass = "correct horse battery staple"
	dir := t.TempDir()
	encrypted := writeFile(t, filepath.Join(dir, "id_enc"), s.Client.encrypted(t, pass), 0o600)
	wrongFile := writeFile(t, filepath.Join(dir, "id_wrong"), wrong.pem, 0o600)
	// A home with the client key as a default identity.
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	writeFile(t, filepath.Join(home, ".ssh", "id_ecdsa"), s.Client.pem, 0o600) // any default name
	writeFile(t, filepath.Join(home, ".ssh", "id_ed25519"), wrong.pem, 0o600)

	base := func() Config { return Config{KnownHosts: []string{s.KnownHosts}, Home: t.TempDir()} }
	tests := []struct {
		name    string
		cfg     func() Config
		newErr  error // from New
		wantErr error // from Run
	}{
		{"key file", func() Config { c := base(); c.Keys = []string{s.Identity}; return c }, nil, nil},
		{"encrypted key with passphrase from env", func() Config {
			c := base()
			c.Keys = []string{encrypted}
			c.FromEnv(func(k string) string {
				if k == EnvPassphrase {
					return pass
				}
				return ""
			})
			return c
		}, nil, nil},
		{"encrypted key, no passphrase", func() Config { c := base(); c.Keys = []string{encrypted}; return c }, ErrConfig, nil},
		{"encrypted key, wrong passphrase", func() Config {
			c := base()
			c.Keys, c.Passphrase = []string{encrypted}, []byte("nope")
			return c
		}, ErrConfig, nil},
		{"key_data in memory", func() Config { c := base(); c.KeyData = []string{string(s.Client.pem)}; return c }, nil, nil},
		{"key_data garbage", func() Config { c := base(); c.KeyData = []string{"not a key"}; return c }, ErrConfig, nil},
		{"agent", func() Config { c := base(); c.AgentSocket = startAgent(t, wrong, s.Client); return c }, nil, nil},
		{"agent, keys_only with a non-matching key", func() Config {
			c := base()
			c.AgentSocket, c.KeysOnly, c.Keys = startAgent(t, s.Client), true, []string{wrongFile}
			return c
		}, nil, ErrAuth},
		{"agent, keys_only with the matching encrypted key", func() Config {
			c := base()
			c.AgentSocket, c.KeysOnly, c.Keys = startAgent(t, s.Client), true, []string{encrypted}
			return c
		}, nil, nil},
		{"default identities", func() Config { c := base(); c.Home = home; return c }, nil, nil},
		{"wrong key", func() Config { c := base(); c.Keys = []string{wrongFile}; return c }, nil, ErrAuth},
		{"no identities at all", base, nil, ErrConfig},
		{"missing key file", func() Config { c := base(); c.Keys = []string{filepath.Join(dir, "nope")}; return c }, ErrConfig, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg())
			if tt.newErr != nil || err != nil {
				if !errors.Is(err, tt.newErr) {
					t.Fatalf("New: want %v, got %v", tt.newErr, err)
				}
				if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "PRIVATE KEY") {
					t.Fatalf("error leaks key material: %v", err)
				}
				return
			}
			defer p.Close()
			_, err = p.Run(testCtx(t, 15e9), s.Host(), []string{"true"}, RunOptions{})
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: want %v, got %v", tt.wantErr, err)
			}
		})
	}
}
