package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runIn runs command name with args in dir with the given environment.
func runIn(t *testing.T, dir string, environ map[string]string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Chdir(dir)
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return environ[k] },
		lookupEnv: func(k string) (string, bool) { v, ok := environ[k]; return v, ok }}
	err := commands[name].run(context.Background(), e, args)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const testDeploy = `service: shop
image: acme/shop
registry:
  server: ghcr.io
  username: bot
  password:
    - KAMAL_REGISTRY_PASSWORD
builder:
  arch: amd64
servers:
  web:
    - 192.0.2.1
  worker:
    hosts:
      - 192.0.2.2
    cmd: bin/jobs
env:
  secret:
    - DATABASE_URL
proxy:
  host: shop.example.com
  ssl: true
`

const (
	secretPW = "registry-pw-5c1f"
	secretDB = "postgres://u:hunter2-9d7e@db/shop"
)

func shopRepo(t *testing.T) string {
	return writeFiles(t, map[string]string{
		"config/deploy.yml": testDeploy,
		".kamal/secrets":    "KAMAL_REGISTRY_PASSWORD=$PW\nDATABASE_URL=$DB\n",
		"ops.env":           "PW=" + secretPW + "\nDB='" + secretDB + "'\n",
	})
}

func TestValidate_ValidAndInvalid(t *testing.T) {
	dir := shopRepo(t)
	out, errOut, code := runIn(t, dir, nil, "validate", "--version", "v3", "--secrets-env-file", "ops.env")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"service: shop", "version: v3 (from --version)", "web (primary, proxied): 192.0.2.1", "worker: 192.0.2.2", "ignored (build-time or local-only): builder"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// Without the env file the secrets cannot be resolved: exit 1, errors on stderr.
	out, errOut, code = runIn(t, dir, nil, "validate", "--version", "v3")
	if code != exitFailure || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	if !strings.Contains(errOut, "config/deploy.yml:7: registry.password[0]: secret KAMAL_REGISTRY_PASSWORD is not available") {
		t.Errorf("stderr:\n%s", errOut)
	}
	// The env file may also come from CAPSTAN_SECRETS_ENV_FILE.
	_, errOut, code = runIn(t, dir, map[string]string{"CAPSTAN_SECRETS_ENV_FILE": "ops.env"}, "validate", "--version", "v3")
	if code != exitOK {
		t.Fatalf("CAPSTAN_SECRETS_ENV_FILE: exit %d\n%s", code, errOut)
	}
}

func TestValidate_Usage(t *testing.T) {
	dir := shopRepo(t)
	for _, args := range [][]string{{"extra"}, {"--no-such-flag"}, {"-c", "../outside.yml"}} {
		_, _, code := runIn(t, dir, nil, "validate", args...)
		if code != exitUsage {
			t.Errorf("validate %q: exit %d, want %d", args, code, exitUsage)
		}
	}
}

func TestValidate_VersionFromGit(t *testing.T) {
	dir := shopRepo(t)
	sha := "8f0e6c2d9b1a4e3f5c7d9e0a1b2c3d4e5f6a7b8c"
	// A git directory with HEAD on a branch in packed-refs.
	for name, content := range map[string]string{
		".git/HEAD":        "ref: refs/heads/main\n",
		".git/packed-refs": "# pack-refs with: peeled fully-peeled sorted\n" + sha + " refs/heads/main\n",
	} {
		p := filepath.Join(dir, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runIn(t, dir, nil, "validate", "--secrets-env-file", "ops.env")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, "version: "+sha+" (from git revision)") {
		t.Errorf("summary:\n%s", out)
	}
	rev, err := gitRevision(filepath.Join(dir, "config"))
	if err != nil || rev != sha {
		t.Errorf("gitRevision from a subdirectory = %q, %v", rev, err)
	}
	if _, err := gitRevision(t.TempDir()); !errors.Is(err, errNotGit) && err == nil {
		t.Errorf("gitRevision outside a repository: %v", err)
	}
}

func TestValidate_NoVersionOutsideGit(t *testing.T) {
	dir := shopRepo(t)
	if _, err := gitRevision(dir); !errors.Is(err, errNotGit) {
		t.Skipf("temp dir is inside a git repository (%v)", err)
	}
	_, errOut, code := runIn(t, dir, nil, "validate", "--secrets-env-file", "ops.env")
	if code != exitFailure || !strings.Contains(errOut, "pass --version or set x-capstan.version") {
		t.Errorf("exit %d\n%s", code, errOut)
	}
}

func TestRender_NoSecretsAndHostFilter(t *testing.T) {
	dir := shopRepo(t)
	envs := map[string]string{"CAPSTAN_FINGERPRINT_KEY": "k"}
	out, errOut, code := runIn(t, dir, envs, "render", "--version", "v3", "--secrets-env-file", "ops.env")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{
		"# host 192.0.2.1", "# host 192.0.2.2", "docker network create kamal",
		`docker run --detach --restart unless-stopped --name shop-web-v3 --network kamal`,
		`docker exec kamal-proxy kamal-proxy deploy shop-web --target="<container-id>:80" --host="shop.example.com" --tls`,
		"# write .kamal/apps/shop/env/roles/web.env (mode 0600): DATABASE_URL=[REDACTED]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render lacks %q:\n%s", want, out)
		}
	}
	jsonOut, _, code := runIn(t, dir, envs, "render", "--version", "v3", "--secrets-env-file", "ops.env", "--json", "--host", "192.0.2.2")
	if code != exitOK || !strings.Contains(jsonOut, `"Host": "192.0.2.2"`) || strings.Contains(jsonOut, "192.0.2.1") {
		t.Errorf("--json --host: exit %d\n%s", code, jsonOut)
	}
	yamlOut, _, code := runIn(t, dir, nil, "config", "--version", "v3", "--secrets-env-file", "ops.env")
	if code != exitOK || !strings.Contains(yamlOut, "service: shop") {
		t.Errorf("config: exit %d\n%s", code, yamlOut)
	}
	for _, s := range []string{secretPW, secretDB, "hunter2"} {
		for name, text := range map[string]string{"render": out, "render --json": jsonOut, "config": yamlOut} {
			if strings.Contains(text, s) {
				t.Errorf("%s output contains secret %q", name, s)
			}
		}
	}
	_, errOut, code = runIn(t, dir, envs, "render", "--version", "v3", "--secrets-env-file", "ops.env", "--host", "203.0.113.99")
	if code != exitFailure || !strings.Contains(errOut, "not in the configuration") {
		t.Errorf("unknown host: exit %d\n%s", code, errOut)
	}
}

func TestRender_FingerprintKeyFromEnv(t *testing.T) {
	dir := shopRepo(t)
	render := func(key string) string {
		out, errOut, code := runIn(t, dir, map[string]string{"CAPSTAN_FINGERPRINT_KEY": key}, "render", "--version", "v3", "--secrets-env-file", "ops.env", "--host", "192.0.2.2")
		if code != exitOK {
			t.Fatalf("exit %d\n%s", code, errOut)
		}
		return out
	}
	first := render("a")
	if render("a") != first {
		t.Error("same key, different output")
	}
	if render("a") == render("b") {
		t.Error("fingerprint does not depend on CAPSTAN_FINGERPRINT_KEY")
	}
}

func TestConfig_RedactsLiteralPassword(t *testing.T) {
	dir := writeFiles(t, map[string]string{"config/deploy.yml": strings.Replace(testDeploy, "  password:\n    - KAMAL_REGISTRY_PASSWORD\n", "  password: literal-pw-77\n", 1) + "env:\n  clear:\n    A: b\n"})
	out, errOut, code := runIn(t, dir, nil, "config", "--version", "v1")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if strings.Contains(out, "literal-pw-77") || !strings.Contains(out, "password: '[REDACTED]'") {
		t.Errorf("config output:\n%s", out)
	}
}

// A one-character secret is masked where it stands as a whole value and
// does not garble the rest of the output ("proxy:", host names); validate
// warns about it by name, never printing the value.
func TestConfig_ShortSecretDoesNotGarble(t *testing.T) {
	deploy := strings.Replace(testDeploy, "proxy:\n  host: shop.example.com\n", "proxy:\n  host: x.example.com\n", 1) +
		"accessories:\n  cache:\n    image: redis:7\n    host: 192.0.2.3\n    cmd: redis-server --requirepass x\n    env:\n      clear:\n        PASSWORD: x\n"
	dir := writeFiles(t, map[string]string{
		"config/deploy.yml": deploy,
		".kamal/secrets":    "KAMAL_REGISTRY_PASSWORD=x\nDATABASE_URL=" + secretDB + "\n",
	})
	out, errOut, code := runIn(t, dir, nil, "config", "--version", "v1")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"\nproxy:\n", "host: x.example.com", "PASSWORD: '[REDACTED]'", "cmd: '[REDACTED]'"} {
		if !strings.Contains(out, want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pro[REDACTED]") || strings.Contains(out, secretDB) {
		t.Errorf("config output garbled or leaking:\n%s", out)
	}

	out, errOut, code = runIn(t, dir, nil, "validate", "--version", "v1")
	if code != exitOK {
		t.Fatalf("validate: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "warning: secret KAMAL_REGISTRY_PASSWORD is shorter than 6 characters") || strings.Contains(errOut, "DATABASE_URL") {
		t.Errorf("validate stderr:\n%s", errOut)
	}
	if !strings.Contains(out, "proxied") {
		t.Errorf("validate summary garbled:\n%s", out)
	}
	// A long secret gets no warning.
	dir = shopRepo(t)
	_, errOut, _ = runIn(t, dir, nil, "validate", "--version", "v3", "--secrets-env-file", "ops.env")
	if strings.Contains(errOut, "warning") {
		t.Errorf("warning for long secrets:\n%s", errOut)
	}
}

func TestSecretCommand(t *testing.T) {
	dir := t.TempDir()
	out, err := runSecretCommand(context.Background(), dir, "printf 'abc\\n'", nil)
	if err != nil || out != "abc\n" {
		t.Errorf("got %q, %v", out, err)
	}
	if _, err := runSecretCommand(context.Background(), dir, "echo leaked-secret >&2; exit 3", nil); err == nil || strings.Contains(err.Error(), "leaked") {
		t.Errorf("failing command error = %v", err)
	}
	out, err = runSecretCommand(context.Background(), dir, "echo \"[$KAMAL_DESTINATION]\"", []string{"KAMAL_DESTINATION=staging"})
	if err != nil || out != "[staging]\n" {
		t.Errorf("with environ: %q, %v", out, err)
	}
}

// With --allow-secret-commands, the commands of the secrets files run
// concurrently, in the repository root, with KAMAL_DESTINATION set. The
// first two each wait (up to 10 s) for the other to have started, so
// they fail if they run one after another; B waits for A's value.
func TestValidate_SecretCommandsConcurrent(t *testing.T) {
	deploy := strings.Replace(testDeploy, "    - DATABASE_URL\n", "    - DATABASE_URL\n    - A\n    - B\n    - DEST\n", 1)
	meet := func(mine, other string) string {
		// \$n reaches the shell as $n; $(( )) is not a variable for dotenv.
		return "touch " + mine + "; n=0; while [ ! -e " + other + " ] && [ \\$n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; test -e " + other
	}
	dir := writeFiles(t, map[string]string{
		"config/deploy.yml":         deploy,
		"config/deploy.staging.yml": "servers:\n  web:\n    - 192.0.2.9\n  worker:\n    hosts:\n      - 192.0.2.8\n    cmd: bin/jobs\n",
		".kamal/secrets.staging": "KAMAL_REGISTRY_PASSWORD=$(" + meet("p.started", "d.started") + " && echo registry-pw-long)\n" +
			"DATABASE_URL=$(" + meet("d.started", "p.started") + " && cat db.txt)\n" +
			"A=$(echo a-value-long)\nB=$(echo \"$KAMAL_DESTINATION-$A\")\nDEST=$(test \"\\$KAMAL_DESTINATION\" = staging && echo dest-ok-long)\n",
		"db.txt": "postgres://db-from-file\n",
	})
	out, errOut, code := runIn(t, dir, nil, "validate", "-d", "staging", "--version", "v3", "--allow-secret-commands")
	if code != exitOK || !strings.Contains(out, "valid") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
}

// Missing secrets are reported together with the structural errors, and
// --no-secrets checks the structure alone (Kamal's config needs no
// secrets).
func TestValidate_NoSecrets(t *testing.T) {
	dir := writeFiles(t, map[string]string{"config/deploy.yml": testDeploy, ".kamal/secrets": "DATABASE_URL=$(cat /nonexistent)\nexport NOT_SET\n"})
	out, errOut, code := runIn(t, dir, nil, "validate", "--version", "v3", "--no-secrets")
	if code != exitOK || !strings.Contains(out, "valid (secrets not checked: --no-secrets)") || !strings.Contains(out, "service: shop") {
		t.Fatalf("--no-secrets: exit %d\n%s\n%s", code, out, errOut)
	}
	broken := strings.Replace(testDeploy, "servers:\n  web:", "primary_role: api\nservers:\n  web:", 1)
	dir = writeFiles(t, map[string]string{"config/deploy.yml": broken})
	_, errOut, code = runIn(t, dir, nil, "validate", "--version", "v3")
	for _, want := range []string{"primary_role: the primary_role api isn't defined", "registry.password[0]: secret KAMAL_REGISTRY_PASSWORD not found", "env.secret[0]: secret DATABASE_URL not found"} {
		if code != exitFailure || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}
	_, errOut, code = runIn(t, dir, nil, "validate", "--version", "v3", "--no-secrets")
	if code != exitFailure || !strings.Contains(errOut, "primary_role") || strings.Contains(errOut, "secret") {
		t.Errorf("--no-secrets with a structural error: exit %d\n%s", code, errOut)
	}
}

// A bare KEY line sets KEY to "" (dotenv 3.2): valid, with a warning.
func TestValidate_BlankSecretWarns(t *testing.T) {
	dir := writeFiles(t, map[string]string{"config/deploy.yml": testDeploy, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=registry-pw-long\nDATABASE_URL\n"})
	_, errOut, code := runIn(t, dir, nil, "validate", "--version", "v3")
	if code != exitOK || !strings.Contains(errOut, "warning: secret DATABASE_URL is blank") || strings.Contains(errOut, "KAMAL_REGISTRY_PASSWORD is blank") {
		t.Errorf("exit %d\n%s", code, errOut)
	}
}
