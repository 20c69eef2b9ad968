package hostexec

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		in      string
		want    Host
		wantErr bool
	}{
		{"10.0.0.1", Host{Addr: "10.0.0.1"}, false},
		{"deploy@bastion", Host{Addr: "bastion", User: "deploy"}, false},
		{"deploy@bastion:2222", Host{Addr: "bastion", User: "deploy", Port: 2222}, false},
		{"[::1]:22", Host{Addr: "::1", Port: 22}, false},
		{"[fe80::1]", Host{Addr: "fe80::1"}, false},
		{"", Host{}, true},
		{"@host", Host{}, true},
		{"host:0", Host{}, true},
		{"host:http", Host{}, true},
	}
	for _, tt := range tests {
		got, err := ParseHost(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrConfig) {
				t.Errorf("ParseHost(%q): want ErrConfig, got %v", tt.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseHost(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

const testSSHConfig = `
# global defaults come last in real files; a leading one applies to all
IdentityFile ~/.ssh/global_key

Host web-*  !web-internal
  HostName %h.example.com
  User deploy
  Port 2201
  IdentityFile ~/.ssh/web_%r

Host web-1
  # first obtained value wins: web-* above already set Port
  Port 9999
  ProxyJump jump@bastion:2222

Host db
  HostName=10.0.0.9
  ProxyJump none

Match host foo
  User ignored

Host *
  User fallback
  Port 22
`

func TestConfig_ResolveWithSSHConfig(t *testing.T) {
	sc, err := parseSSHConfig(strings.NewReader(testSSHConfig), "ssh_config")
	if err != nil {
		t.Fatal(err)
	}
	cfgs := []*sshConfig{sc}
	home := "/home/op"
	tests := []struct {
		name string
		cfg  Config
		in   Host
		want Host
	}{
		{"pattern, tokens, jump", Config{Home: home}, Host{Addr: "web-1"}, Host{
			Addr: "web-1.example.com", Port: 2201, User: "deploy",
			IdentityFiles: []string{home + "/.ssh/global_key", home + "/.ssh/web_deploy"},
			ProxyJump:     []Host{{Addr: "bastion", Port: 2222, User: "jump", IdentityFiles: []string{home + "/.ssh/global_key"}}},
		}},
		{"negated pattern falls through to *", Config{Home: home}, Host{Addr: "web-internal"}, Host{
			Addr: "web-internal", Port: 22, User: "fallback", IdentityFiles: []string{home + "/.ssh/global_key"}, ProxyJump: []Host{},
		}},
		{"deploy.yml overrides ssh_config; ProxyJump none beats nothing", Config{Home: home, User: "app", Port: 2022}, Host{Addr: "db"}, Host{
			Addr: "10.0.0.9", Port: 2022, User: "app", IdentityFiles: []string{home + "/.ssh/global_key"}, ProxyJump: []Host{},
		}},
		{"deploy.yml proxy beats ssh_config ProxyJump", Config{Home: home, Proxy: "bastion2"}, Host{Addr: "web-1"}, Host{
			Addr: "web-1.example.com", Port: 2201, User: "deploy",
			IdentityFiles: []string{home + "/.ssh/global_key", home + "/.ssh/web_deploy"},
			ProxyJump:     []Host{{Addr: "bastion2", Port: 22, User: "fallback", IdentityFiles: []string{home + "/.ssh/global_key"}, ProxyJump: []Host{}}},
		}},
		{"host fields win", Config{Home: home, User: "app"}, Host{Addr: "db", User: "me", Port: 1, ProxyJump: []Host{}}, Host{
			Addr: "10.0.0.9", Port: 1, User: "me", IdentityFiles: []string{home + "/.ssh/global_key"}, ProxyJump: []Host{},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.resolve(tt.in, cfgs, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, want := normJumps(got), normJumps(tt.want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("resolve(%+v)\n got %#v\nwant %#v", tt.in, got, want)
			}
		})
	}
}

func TestConfig_Defaults(t *testing.T) {
	got, err := (&Config{}).resolve(Host{Addr: "10.0.0.1"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != DefaultUser || got.Port != DefaultPort || len(got.ProxyJump) != 0 {
		t.Errorf("defaults: %+v", got)
	}
	// Kamal: a bare proxy host is root@host:22, whatever the target's user and port.
	got, err = (&Config{User: "app", Port: 2222, Proxy: "bastion"}).resolve(Host{Addr: "10.0.0.1"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if j := got.ProxyJump; len(j) != 1 || j[0].User != "root" || j[0].Port != 22 || got.User != "app" || got.Port != 2222 {
		t.Errorf("proxy defaults: %+v", got)
	}
	var c Config
	c.FromEnv(func(k string) string {
		return map[string]string{EnvKnownHosts: "/a:/b", EnvIdentity: "/k", EnvPassphrase: "pw", EnvAuthSock: "/s"}[k]
	})
	if !reflect.DeepEqual(c.KnownHosts, []string{"/a", "/b"}) || !reflect.DeepEqual(c.Keys, []string{"/k"}) ||
		string(c.Passphrase) != "pw" || c.AgentSocket != "/s" || !c.Redactor.Contains("pw") {
		t.Errorf("FromEnv: %+v", c)
	}
	if _, err := parseSSHConfig(strings.NewReader("Host x\n  Port\n"), "f"); !errors.Is(err, ErrConfig) {
		t.Errorf("keyword without value: want ErrConfig, got %v", err)
	}
	sc, _ := parseSSHConfig(strings.NewReader("Host x\n  Port abc\n"), "f")
	if _, err := (&Config{}).resolve(Host{Addr: "x"}, []*sshConfig{sc}, 0); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "f:2") {
		t.Errorf("bad port: want ErrConfig naming f:2, got %v", err)
	}
}

// TestPool_SSHConfigAlias connects through an ssh_config alias that sets
// HostName, Port, User and IdentityFile.
func TestPool_SSHConfigAlias(t *testing.T) {
	s := startSSHD(t)
	conf := writeFile(t, filepath.Join(t.TempDir(), "config"), []byte(
		"Host myserver\n  HostName 127.0.0.1\n  Port "+itoa(s.Port)+"\n  User root\n  IdentityFile "+s.Identity+"\n"), 0o600)
	cfg := Config{KnownHosts: []string{s.KnownHosts}, SSHConfig: []string{conf}, KeysOnly: true, Home: t.TempDir()}
	p := newPool(t, cfg)
	res, err := p.Run(testCtx(t, 15*time.Second), Host{Addr: "myserver"}, []string{"echo", "via alias"}, RunOptions{})
	if err != nil || string(res.Stdout) != "via alias\n" {
		t.Fatalf("Run via alias: %q, %v", res.Stdout, err)
	}
}

// normJumps makes empty ProxyJump lists nil, recursively, for comparison.
func normJumps(h Host) Host {
	if len(h.ProxyJump) == 0 {
		h.ProxyJump = nil
		return h
	}
	js := make([]Host, len(h.ProxyJump))
	for i, j := range h.ProxyJump {
		js[i] = normJumps(j)
	}
	h.ProxyJump = js
	return h
}
