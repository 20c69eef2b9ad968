package kamalproxy

import (
	"bufio"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// kamalShell renders argv the way Kamal logs it: deploy flags as
// --key="value" (Ruby's String#dump), everything else as is.
func kamalShell(argv []string) string {
	deploy := len(argv) > 4 && argv[4] == "deploy"
	out := make([]string, len(argv))
	for i, a := range argv {
		if k, v, ok := strings.Cut(a, "="); deploy && ok && strings.HasPrefix(a, "--") {
			a = k + `="` + v + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func golden(t *testing.T, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s mismatch:\n got: %s\nwant: %s", path, got, want)
	}
}

func ptr[T any](v T) *T { return &v }

var transcriptRoute = proxy.Route{Service: "testapp", Role: "web", Options: proxy.Options{
	HealthCheck: proxy.HealthCheck{Path: "/up", Interval: time.Second},
}}

var transcriptSettings = Settings{Registry: "10.231.0.1:5000", Repository: "basecamp/kamal-proxy", Version: "v0.9.2"}

func TestDeployArgs_MatchesKamalTranscript(t *testing.T) {
	lines := transcriptLines(t)
	argv, err := DeployArgs(transcriptSettings, transcriptRoute, proxy.Target{Container: "2a271781744a", Port: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if got := kamalShell(argv); got != lines[1] {
		t.Errorf("deploy:\n got: %s\nwant: %s", got, lines[1])
	}
	boot := kamalShell(StartArgs(transcriptSettings)) + " || " + kamalShell(RunArgs(transcriptSettings))
	boot = strings.ReplaceAll(boot, DefaultAppsConfig, "$PWD/.kamal/proxy/apps-config")
	if boot != lines[0] {
		t.Errorf("boot:\n got: %s\nwant: %s", boot, lines[0])
	}
}

func transcriptLines(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("testdata/transcript.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("transcript.txt: %d command lines, want 2", len(lines))
	}
	return lines
}

func TestDeployArgs_Golden(t *testing.T) {
	target := proxy.Target{Container: "a7535f905149", Port: 3000}
	cases := map[string]proxy.Route{
		"deploy_default":    {Service: "app", Role: "web"},
		"deploy_transcript": transcriptRoute,
		"deploy_full": {Service: "app", Role: "web", Destination: "staging", Options: proxy.Options{
			Hosts:              []string{"app.example.com", "www.example.com"},
			PathPrefixes:       []string{"/api", "/v2"},
			TLS:                true,
			TLSCertificatePath: "/home/kamal-proxy/.apps-config/app-staging/tls/web/cert.pem",
			TLSPrivateKeyPath:  "/home/kamal-proxy/.apps-config/app-staging/tls/web/key.pem",
			TLSRedirect:        ptr(true),
			ForwardHeaders:     ptr(true),
			StripPathPrefix:    ptr(true),
			ResponseTimeout:    45 * time.Second,
			HealthCheck:        proxy.HealthCheck{Path: "/health", Interval: 2 * time.Second, Timeout: 1500 * time.Millisecond},
			BufferMemory:       2 << 20,
			MaxRequestBody:     10 << 20,
			MaxResponseBody:    20 << 20,
			LogRequestHeaders:  []string{"X-Request-Start"},
			LogResponseHeaders: []string{"X-Runtime", "Content-Length"},
			DeployTimeout:      60 * time.Second,
			DrainTimeout:       5 * time.Second,
			ErrorPages:         "/home/kamal-proxy/.apps-config/app-staging/error_pages/v42",
		}},
		"deploy_falsy": {Service: "app", Role: "api", Options: proxy.Options{
			BufferRequests:    ptr(false),
			BufferResponses:   ptr(false),
			StripPathPrefix:   ptr(false),
			ForwardHeaders:    ptr(false),
			TLSRedirect:       ptr(false),
			LogRequestHeaders: []string{},
		}},
	}
	for name, route := range cases {
		t.Run(name, func(t *testing.T) {
			argv, err := DeployArgs(Settings{}, route, target)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name, kamalShell(argv)+"\n")
		})
	}
}

func TestRunArgs_Golden(t *testing.T) {
	cases := map[string]Settings{
		"run_default": {},
		"run_full": {
			Container: "kamal-proxy", Registry: "registry.example.com", Version: "v0.9.3",
			HTTPPort: 8080, HTTPSPort: 8443,
			BindIPs:       []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
			MetricsPort:   9000,
			Debug:         true,
			LogMaxSize:    "50m",
			Options:       []Option{{"memory", "512m"}, {"init", ""}},
			AppsConfigDir: "/home/deploy/.kamal/proxy/apps-config",
		},
		"run_nopublish": {NoPublish: true},
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			golden(t, name, kamalShell(RunArgs(s))+"\n")
		})
	}
}

func TestSmallArgs_Golden(t *testing.T) {
	s := Settings{}
	got := strings.Join([]string{
		kamalShell(NetworkArgs(s)),
		kamalShell(StateArgs(s)),
		kamalShell(MkdirArgs(s)),
		kamalShell(StartArgs(s)),
		kamalShell(ListArgs(s)),
		kamalShell(RemoveArgs(s, "app-web-staging")),
	}, "\n") + "\n"
	golden(t, "small", got)
}

func TestDeployArgs_Invalid(t *testing.T) {
	good := proxy.Target{Container: "a7535f905149", Port: 3000}
	cases := map[string]struct {
		route  proxy.Route
		target proxy.Target
	}{
		"tls without host":     {proxy.Route{Service: "app", Role: "web", Options: proxy.Options{TLS: true}}, good},
		"quote in host":        {proxy.Route{Service: "app", Role: "web", Options: proxy.Options{Hosts: []string{`a.com"`}}}, good},
		"space in service":     {proxy.Route{Service: "my app", Role: "web"}, good},
		"empty role":           {proxy.Route{Service: "app"}, good},
		"cert without key":     {proxy.Route{Service: "app", Role: "web", Options: proxy.Options{Hosts: []string{"a.com"}, TLS: true, TLSCertificatePath: "/c.pem"}}, good},
		"max body no buffer":   {proxy.Route{Service: "app", Role: "web", Options: proxy.Options{BufferRequests: ptr(false), MaxRequestBody: 10}}, good},
		"port zero":            {proxy.Route{Service: "app", Role: "web"}, proxy.Target{Container: "abc", Port: 0}},
		"container with colon": {proxy.Route{Service: "app", Role: "web"}, proxy.Target{Container: "abc:1", Port: 80}},
		"negative timeout":     {proxy.Route{Service: "app", Role: "web", Options: proxy.Options{DrainTimeout: -time.Second}}, good},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DeployArgs(Settings{}, c.route, c.target)
			if !errors.Is(err, proxy.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSettings_Invalid(t *testing.T) {
	for name, s := range map[string]Settings{
		"relative apps dir":    {AppsConfigDir: ".kamal/proxy/apps-config"},
		"bind without publish": {NoPublish: true, BindIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		"bad port":             {HTTPPort: 70000},
		"dashed option":        {Options: []Option{{"--memory", "1g"}}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Validate(); !errors.Is(err, proxy.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}
