package kamal

import (
	"regexp"
	"strings"
	"testing"
)

// execConfig is Kamal's test/commands/app_test.rb setup: service app,
// image dhh/app, version 999, one web host.
const execConfig = `service: app
image: dhh/app
registry:
  username: u
  password:
    - KAMAL_REGISTRY_PASSWORD
builder:
  arch: amd64
`

func loadExec(t *testing.T, cfg string, opts LoadOptions) *Config {
	t.Helper()
	opts.Version = "999"
	const secrets = "KAMAL_REGISTRY_PASSWORD=pw\nSECRET_KEY=s3cret\n"
	c, err := load(t, map[string]string{
		"config/deploy.yml":         execConfig + cfg,
		"config/deploy.staging.yml": "env:\n  clear:\n    STAGE: \"1\"\n",
		".kamal/secrets":            secrets,
		".kamal/secrets.staging":    secrets,
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConfig_ExecRun compares with the lines Kamal 2.12's own tests
// (test/commands/app_test.rb, "execute in new container…") expect for the
// same configuration.
func TestConfig_ExecRun(t *testing.T) {
	servers := "servers:\n  web:\n    hosts:\n      - 1.1.1.1\n"
	cases := []struct {
		name string
		cfg  string
		dest string
		o    ExecOptions
		want string
	}{
		{"plain", servers, "", ExecOptions{Cmd: []string{"bin/rails", "db:setup"}},
			`docker run --rm --name app-web-exec-999-abcdef --network kamal --env-file .kamal/apps/app/env/roles/web.env --log-opt max-size="10m" dhh/app:999 bin/rails db:setup`},
		{"env", servers, "", ExecOptions{Cmd: []string{"bin/rails", "db:setup"}, Env: []KV{{Key: "foo", Value: "bar"}}},
			`docker run --rm --name app-web-exec-999-abcdef --network kamal --env-file .kamal/apps/app/env/roles/web.env --env foo="bar" --log-opt max-size="10m" dhh/app:999 bin/rails db:setup`},
		{"interactive", servers, "", ExecOptions{Cmd: []string{"bin/rails", "c"}, Interactive: true},
			`docker run -it --rm --name app-web-exec-999-abcdef --network kamal --env-file .kamal/apps/app/env/roles/web.env --log-opt max-size="10m" dhh/app:999 bin/rails c`},
		{"detach", servers, "", ExecOptions{Cmd: []string{"bin/rails", "db:setup"}, Detach: true},
			`docker run --detach --name app-web-exec-999-abcdef --network kamal --env-file .kamal/apps/app/env/roles/web.env --log-opt max-size="10m" dhh/app:999 bin/rails db:setup`},
		{"options", "servers:\n  web:\n    hosts:\n      - 1.1.1.1\n    options:\n      mount: somewhere\n      cap-add: true\n", "", ExecOptions{Cmd: []string{"bin/rails", "db:setup"}},
			`docker run --rm --name app-web-exec-999-abcdef --network kamal --env-file .kamal/apps/app/env/roles/web.env --log-opt max-size="10m" --mount "somewhere" --cap-add dhh/app:999 bin/rails db:setup`},
		{"env volumes logging", servers + "env:\n  clear:\n    RAILS_ENV: production\n  secret:\n    - SECRET_KEY\nvolumes:\n  - /local/path:/container/path\n  - $PWD/data:/data\nlogging:\n  driver: local\n  options:\n    max-size: 100m\n", "", ExecOptions{Cmd: []string{"sh", "-c", "echo $A"}},
			`docker run --rm --name app-web-exec-999-abcdef --network kamal --env RAILS_ENV="production" --env-file .kamal/apps/app/env/roles/web.env --log-driver "local" --log-opt max-size="100m" --volume /local/path:/container/path --volume $PWD/data:/data dhh/app:999 sh -c 'echo $A'`},
		{"destination", servers, "staging", ExecOptions{Cmd: []string{"true"}},
			`docker run --rm --name app-web-staging-exec-999-abcdef --network kamal --env STAGE="1" --env-file .kamal/apps/app-staging/env/roles/web.env --log-opt max-size="10m" dhh/app:999 true`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := loadExec(t, tc.cfg, LoadOptions{Destination: tc.dest})
			tc.o.Role, tc.o.Host, tc.o.Suffix = "web", "1.1.1.1", "abcdef"
			name, run, err := c.ExecRun(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := run.String(); got != tc.want {
				t.Errorf("run\n got %s\nwant %s", got, tc.want)
			}
			if !strings.Contains(tc.want, "--name "+name+" ") {
				t.Errorf("name %q is not the --name of the run", name)
			}
		})
	}
}

// TestConfig_ExecRunSharesBoot checks that exec takes the env, env file,
// logging, volumes and options of the role's boot for the host's tags.
func TestConfig_ExecRunSharesBoot(t *testing.T) {
	c := loadExec(t, "servers:\n  web:\n    hosts:\n      - 1.1.1.1: [eu]\n    options:\n      memory: 1g\nenv:\n  clear:\n    A: root\n  tags:\n    eu:\n      A: tagged\n", LoadOptions{})
	p, err := c.Plan("1.1.1.1")
	if err != nil {
		t.Fatal(err)
	}
	_, run, err := c.ExecRun(ExecOptions{Role: "web", Host: "1.1.1.1", Cmd: []string{"x"}, Suffix: "000000"})
	if err != nil {
		t.Fatal(err)
	}
	boot := p.Apps[0].Run.String()
	for _, part := range []string{`--env A="tagged"`, "--env-file " + p.Apps[0].EnvFile.Path, `--log-opt max-size="10m"`, `--memory "1g"`} {
		if !strings.Contains(boot, part) || !strings.Contains(run.String(), part) {
			t.Errorf("%q: boot %q, exec %q", part, boot, run)
		}
	}
	for _, absent := range []string{"KAMAL_", "--hostname", "--label", "--restart"} {
		if strings.Contains(run.String(), absent) {
			t.Errorf("exec has %s: %s", absent, run)
		}
	}
}

func TestConfig_ExecRunErrors(t *testing.T) {
	c := loadExec(t, "servers:\n  web:\n    hosts:\n      - 1.1.1.1\n", LoadOptions{})
	if _, _, err := c.ExecRun(ExecOptions{Role: "nope", Host: "1.1.1.1"}); err == nil {
		t.Error("unknown role: no error")
	}
	if _, _, err := c.ExecRun(ExecOptions{Role: "web", Host: "9.9.9.9"}); err == nil {
		t.Error("host outside the role: no error")
	}
	seen := map[string]bool{}
	for range 5 {
		name, _, err := c.ExecRun(ExecOptions{Role: "web", Host: "1.1.1.1"})
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^app-web-exec-999-[0-9a-f]{6}$`).MatchString(name) {
			t.Fatalf("name %q", name)
		}
		seen[name] = true
	}
	if len(seen) < 2 {
		t.Errorf("random suffixes repeat: %v", seen)
	}
}
