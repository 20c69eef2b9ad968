package daemon

import (
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
