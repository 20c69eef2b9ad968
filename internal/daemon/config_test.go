package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "capstan.yml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig_TheDocumentedExample(t *testing.T) {
	p := writeFile(t, `listen: 127.0.0.1:9740
state_dir: /var/lib/capstan
ssh: {known_hosts: /etc/capstan/known_hosts, identity: /etc/capstan/id_ed25519}
secrets_env_file: /etc/capstan/secrets.env
webhooks: {github_secret_env: GITHUB_WEBHOOK_SECRET, gitlab_token_env: GITLAB_WEBHOOK_TOKEN}
api_token_env: CAPSTAN_API_TOKEN
apps:
  - name: myapp
    repo: ssh://git@example.com/acme/myapp.git
    branch: main
    path: .
    destination: production
    poll: 60s
    drift_schedule: "*/5 * * * *"
    self_heal: true
    git: {ssh_key: /etc/capstan/deploy_key, token_env: GIT_TOKEN}
`)
	env := map[string]string{"GITHUB_WEBHOOK_SECRET": "s", "GITLAB_WEBHOOK_TOKEN": "t", "CAPSTAN_API_TOKEN": "a", "GIT_TOKEN": "g", "CAPSTAN_LISTEN": "127.0.0.1:0"}
	c, err := LoadConfig(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps[0]
	if c.Listen != "127.0.0.1:0" || a.Name != "myapp" || time.Duration(a.Poll) != time.Minute || a.SelfHeal == nil || !*a.SelfHeal || a.schedule == nil || a.Git.SSHKey != "/etc/capstan/deploy_key" {
		t.Errorf("%+v / %+v", c, a)
	}
}

func TestLoadConfig_ErrorsNameFileLineKey(t *testing.T) {
	p := writeFile(t, `listen: 127.0.0.1:9740
apps:
  - name: ok
    repo: /tmp/x
  - name: Bad Name
    poll: 10ms
    drift_schedule: "every tuesday"
    git: {token_env: MISSING_TOKEN}
alerts:
  - type: pager
`)
	_, err := LoadConfig(p, func(string) string { return "" })
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("%v", err)
	}
	want := []string{
		p + ":5: apps[1].name:",
		p + ":5: apps[1].repo: is required",
		p + ":6: apps[1].poll: must be at least 1s",
		p + ":7: apps[1].drift_schedule:",
		p + ":8: apps[1].git.token_env: environment variable MISSING_TOKEN is not set",
		p + ":10: alerts[0].type:",
	}
	if len(errs) != len(want) {
		t.Fatalf("%d errors:\n%s", len(errs), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(errs[i], w) {
			t.Errorf("error %d: %q, want prefix %q", i, errs[i], w)
		}
	}
	p = writeFile(t, "apps:\n  - name: a\n    repo: x\n    colour: blue\n")
	_, err = LoadConfig(p, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), p+":4:") || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestLoadConfig_BesideRegistryExample(t *testing.T) {
	env := map[string]string{"GITHUB_WEBHOOK_SECRET": "s", "CAPSTAN_API_TOKEN": "t"}
	c, err := LoadConfig("../../examples/beside-registry/capstan.yml", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) != 1 || c.Apps[0].Destination != "production" || len(c.Alerts) != 1 {
		t.Errorf("%+v", c)
	}
}

func TestLoopback(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:9740": true, "127.0.0.2:1": true, "[::1]:9740": true, "localhost:9740": true,
		"0.0.0.0:9740": false, ":9740": false, "[::]:9740": false, "10.0.0.1:9740": false,
		"capstan.example.com:9740": false, "127.0.0.1": false, "": false,
	} {
		if got := loopback(listen); got != want {
			t.Errorf("loopback(%q) = %v, want %v", listen, got, want)
		}
	}
}

func TestLoadConfig_PublicListenNeedsTokenOrOptIn(t *testing.T) {
	env := map[string]string{"TOK": "t"}
	getenv := func(k string) string { return env[k] }
	for _, c := range []struct {
		yml string
		ok  bool
	}{
		{"listen: 127.0.0.1:9740\n", true},
		{"", true}, // the default listen is loopback
		{"listen: 0.0.0.0:9740\n", false},
		{"listen: :9740\n", false},
		{"listen: 0.0.0.0:9740\napi_token_env: TOK\n", true},
		{"listen: 0.0.0.0:9740\ninsecure_public_status: true\n", true},
	} {
		p := writeFile(t, c.yml+"apps:\n  - {name: a, repo: /r}\n")
		_, err := LoadConfig(p, getenv)
		if c.ok {
			if err != nil {
				t.Errorf("%q: %v", c.yml, err)
			}
			continue
		}
		var errs ConfigErrors
		if !errors.As(err, &errs) || len(errs) != 1 {
			t.Errorf("%q: %v, want one config error", c.yml, err)
			continue
		}
		for _, want := range []string{p + ":1: listen:", "api_token_env", "insecure_public_status"} {
			if !strings.Contains(errs[0], want) {
				t.Errorf("%q: %q lacks %q", c.yml, errs[0], want)
			}
		}
	}
	// CAPSTAN_LISTEN counts like listen.
	env["CAPSTAN_LISTEN"] = "0.0.0.0:9740"
	if _, err := LoadConfig(writeFile(t, "apps:\n  - {name: a, repo: /r}\n"), getenv); err == nil {
		t.Error("CAPSTAN_LISTEN=0.0.0.0:9740 without a token was accepted")
	}
}

func TestLoadConfig_EmptyTokenIsAnError(t *testing.T) {
	p := writeFile(t, "api_token_env: TOK\napps:\n  - {name: a, repo: /r}\n")
	_, err := LoadConfig(p, func(string) string { return "" })
	var errs ConfigErrors
	if !errors.As(err, &errs) || len(errs) != 1 || !strings.HasPrefix(errs[0], p+":1: api_token_env: environment variable TOK is not set") {
		t.Errorf("%v", err)
	}
}

func TestNew_RefusesAnOpenDoor(t *testing.T) {
	dir := t.TempDir()
	base := Config{Listen: "127.0.0.1:0", StateDir: dir}
	c := base
	c.APITokenEnv = "TOK"
	if _, err := New(context.Background(), &c, Deps{Getenv: func(string) string { return "" }}); !errors.Is(err, ErrNoToken) {
		t.Errorf("empty token: %v, want ErrNoToken", err)
	}
	c = base
	c.Listen = "0.0.0.0:9740"
	if _, err := New(context.Background(), &c, Deps{Getenv: func(string) string { return "" }}); err == nil || !strings.Contains(err.Error(), "insecure_public_status") {
		t.Errorf("public listen without a token: %v", err)
	}
	c.InsecurePublicStatus = true
	d, err := New(context.Background(), &c, Deps{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatalf("public listen, insecure_public_status: %v", err)
	}
	_ = d.Close()
}

// deploy.yml and the secrets files see a variable set to "" as set: the
// daemon's LookupEnv is os.LookupEnv by default, or the one given.
func TestNew_LookupEnv(t *testing.T) {
	c := Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()}
	t.Setenv("CAPSTAN_TEST_EMPTY", "")
	d, err := New(context.Background(), &c, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if v, ok := d.deps.LookupEnv("CAPSTAN_TEST_EMPTY"); !ok || v != "" {
		t.Errorf("default LookupEnv = %q, %v", v, ok)
	}
	c.StateDir = t.TempDir()
	d2, err := New(context.Background(), &c, Deps{Getenv: func(string) string { return "" }, LookupEnv: func(k string) (string, bool) { return "", k == "E" }})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if _, ok := d2.deps.LookupEnv("E"); !ok {
		t.Error("the LookupEnv given is not used")
	}
}

func TestLoadConfig_State(t *testing.T) {
	env := map[string]string{"PG_DSN": "postgres://capstan@db/capstan"}
	getenv := func(k string) string { return env[k] }
	c, err := LoadConfig(writeFile(t, "apps:\n  - {name: a, repo: x}\n"), getenv)
	if err != nil || c.State.Driver != "sqlite" || c.State.replicated() {
		t.Fatalf("default: %+v, %v; want sqlite", c, err)
	}
	c, err = LoadConfig(writeFile(t, "state: {driver: postgres, dsn_env: PG_DSN}\napps:\n  - {name: a, repo: x}\n"), getenv)
	if err != nil || !c.State.replicated() || time.Duration(c.State.LeaseTTL) != 10*time.Second {
		t.Fatalf("postgres: %+v, %v; want replicated with a 10s lease", c.State, err)
	}
	for doc, want := range map[string]string{
		"state: {driver: postgres}\n":                                      ":1: state.dsn_env: is required",
		"state: {driver: postgres, dsn_env: UNSET}\n":                      ":1: state.dsn_env: environment variable UNSET is not set",
		"state:\n  driver: mysql\n":                                        ":2: state.driver: \"mysql\": want sqlite or postgres",
		"state:\n  driver: postgres\n  dsn_env: PG_DSN\n  lease_ttl: 1s\n": ":4: state.lease_ttl: must be at least 3s",
	} {
		p := writeFile(t, doc+"apps:\n  - {name: a, repo: x}\n")
		_, err := LoadConfig(p, getenv)
		if err == nil || !strings.Contains(err.Error(), p+want) {
			t.Errorf("%q: %v, want %q", doc, err, p+want)
		}
		if err != nil && strings.Contains(err.Error(), "capstan@db") {
			t.Errorf("the DSN is in an error: %v", err)
		}
	}
}

func TestLoadConfig_ReplicasExample(t *testing.T) {
	env := map[string]string{"GITHUB_WEBHOOK_SECRET": "s", "CAPSTAN_API_TOKEN": "t", "CAPSTAN_PG_DSN": "postgres://capstan:pw@postgres/capstan"}
	c, err := LoadConfig("../../examples/replicas/capstan.yml", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !c.State.replicated() || len(c.Apps) != 3 || time.Duration(c.State.LeaseTTL) != 10*time.Second {
		t.Errorf("%+v", c)
	}
}
