package haproxy

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

func fullConfig() Config {
	return Config{
		TimeoutServer: 90 * time.Second,
		Backends: []Backend{
			{Name: "shop-web-production", Hosts: []string{"Shop.example.com", "www.shop.example.com"}, ResponseTimeout: 45 * time.Second,
				Servers: []Server{{Name: "shop-web-production-v42", Addr: netip.MustParseAddrPort("172.18.0.5:3000")}}},
			{Name: "tenants-web", Hosts: []string{"*.tenants.example.com"},
				Servers: []Server{{Name: "tenants-web-abc123", Addr: netip.MustParseAddrPort("172.18.0.6:80")}}},
			{Name: "blog-web", Servers: []Server{
				{Name: "blog-web-v2", Addr: netip.MustParseAddrPort("172.18.0.8:3000")},
				{Name: "blog-web-v1", Addr: netip.MustParseAddrPort("[fd00::7]:3000")},
			}},
			{Name: "api-web", Hosts: []string{"api.example.com"}},
		},
	}
}

func TestRender_Golden(t *testing.T) {
	for name, c := range map[string]Config{
		"haproxy_full":  fullConfig(),
		"haproxy_empty": {},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := Render(c)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name, cfg)
			again, _ := Render(c)
			if string(again) != string(cfg) {
				t.Error("Render is not deterministic")
			}
		})
	}
}

// TestRender_HAProxyAccepts runs `haproxy -c` on the rendered file.
func TestRender_HAProxyAccepts(t *testing.T) {
	bin := haproxyBin(t)
	dir := t.TempDir()
	c := fullConfig()
	c.Socket, c.Bind = filepath.Join(dir, "admin.sock"), "127.0.0.1:"+strconv.Itoa(freePort(t))
	cfg, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "WARNING") {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
}

func TestRender_Invalid(t *testing.T) {
	addr := netip.MustParseAddrPort("172.18.0.5:3000")
	cases := map[string][]Backend{
		"two catch-alls":   {{Name: "a-web"}, {Name: "b-web"}},
		"host twice":       {{Name: "a-web", Hosts: []string{"x.com"}}, {Name: "b-web", Hosts: []string{"X.com"}}},
		"quote in server":  {{Name: "a-web", Servers: []Server{{Name: `v1"`, Addr: addr}}}},
		"space in backend": {{Name: "a web"}},
		"slash in server":  {{Name: "a-web", Servers: []Server{{Name: "a/b", Addr: addr}}}},
		"no port":          {{Name: "a-web", Servers: []Server{{Name: "v1", Addr: netip.AddrPortFrom(addr.Addr(), 0)}}}},
		"zero address":     {{Name: "a-web", Servers: []Server{{Name: "v1"}}}},
		"bad host":         {{Name: "a-web", Hosts: []string{"x.com }"}}},
		"backend twice":    {{Name: "a-web", Hosts: []string{"x.com"}}, {Name: "a-web", Hosts: []string{"y.com"}}},
	}
	for name, bs := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Render(Config{Backends: bs}); !errors.Is(err, proxy.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := Render(Config{Bind: "127.0.0.1:80 # x"}); !errors.Is(err, proxy.ErrInvalid) {
		t.Errorf("bind with comment: err = %v", err)
	}
}

func TestRunArgs_Golden(t *testing.T) {
	s := Settings{Image: "10.231.0.1:5000/haproxy:lab"}
	custom := Settings{Image: "registry.example.com/haproxy:2.6", Container: "edge", ConfigDir: "/srv/capstan/haproxy",
		SocketDir: "/run/edge", HTTPPort: 8080, LogMaxSize: "50m"}
	lines := []string{
		strings.Join(RunArgs(s), " "),
		strings.Join(RunArgs(custom), " "),
		strings.Join(RunArgs(Settings{Image: "h:1", NoPublish: true}), " "),
	}
	d := s.withDefaults()
	for _, argv := range [][]string{bootArgs(d), startArgs(d), reloadArgs(d), catArgs(d), writeArgs(d)} {
		lines = append(lines, strings.Join(argv, " "))
	}
	golden(t, "docker", []byte(strings.Join(lines, "\n")+"\n"))
}

func TestSettings_Invalid(t *testing.T) {
	for name, s := range map[string]Settings{
		"no image":          {},
		"relative config":   {Image: "h:1", ConfigDir: "cfg"},
		"colon in socket":   {Image: "h:1", SocketDir: "/run/a:b"},
		"unclean":           {Image: "h:1", SocketDir: "/run/capstan/../x"},
		"bad container":     {Image: "h:1", Container: "a b"},
		"port out of range": {Image: "h:1", HTTPPort: 65536},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(nopHost{}, nopHost{}, s); !errors.Is(err, proxy.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSkeleton(t *testing.T) {
	a, _ := Render(fullConfig())
	c := fullConfig()
	c.Backends[0].Servers[0].Name = "shop-web-production-v43"
	b, _ := Render(c)
	if skeleton(a) != skeleton(b) {
		t.Error("changing a server changed the skeleton (would reload)")
	}
	c.Backends[0].Hosts = []string{"shop.example.com"}
	b, _ = Render(c)
	if skeleton(a) == skeleton(b) {
		t.Error("changing hosts kept the skeleton (would not reload)")
	}
}

// TestBootScript runs the boot script through /bin/sh with a fake docker:
// a running container skips the network; a missing one creates it; the
// directories end up 0700 and the configuration is printed after the
// marker.
func TestBootScript(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "docker.log")
	fake := "#!/bin/sh\necho \"$1 $2\" >> " + logPath + "\ncase \"$1 $2\" in\n\"container inspect\") [ -e " + filepath.Join(dir, "running") + " ] && echo true && exit 0; echo 'No such container' >&2; exit 1;;\nesac\nexit 0\n"
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	s := Settings{Image: "h:1", ConfigDir: filepath.Join(dir, "cfg"), SocketDir: filepath.Join(dir, "sock")}.withDefaults()
	run := func() (string, []byte, string) {
		t.Helper()
		os.Remove(logPath)
		argv := bootArgs(s)
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatal(err)
		}
		state, cfg, err := parseBoot(out)
		if err != nil {
			t.Fatal(err)
		}
		log, _ := os.ReadFile(logPath)
		return state, cfg, string(log)
	}
	state, cfg, log := run()
	if state != "missing" || len(cfg) != 0 || log != "container inspect\nnetwork create\n" {
		t.Errorf("missing container: state %q, config %q, docker calls %q", state, cfg, log)
	}
	for _, d := range []string{s.ConfigDir, s.SocketDir} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", d, fi, err)
		}
	}
	if err := os.WriteFile(s.ConfigPath(), []byte("global\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "running"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	state, cfg, log = run()
	if state != "true" || string(cfg) != "global\n" || log != "container inspect\n" {
		t.Errorf("running container: state %q, config %q, docker calls %q", state, cfg, log)
	}
	if _, _, err := parseBoot([]byte("garbage")); err == nil {
		t.Error("parseBoot accepted output without the marker")
	}
}
