package kamal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exampleEnv stands for the operator's env file of the examples.
var exampleEnv = map[string]string{
	"GITHUB_TOKEN": "ghp_example", "RAILS_MASTER_KEY": "0123456789abcdef", "PRODUCTION_DATABASE_URL": "postgres://db/myapp",
	"PRODUCTION_REDIS_URL": "redis://203.0.113.12:6379/0", "TLS_CERTIFICATE_PEM": "CERT", "TLS_PRIVATE_KEY_PEM": "KEY",
	"GHCR_TOKEN": "ghcr-token", "LAB_REGISTRY_PASSWORD": "lab-registry-password", "DEMO_SECRET_KEY": "demo-secret",
}

// TestExamples validates every configuration under examples/: each must
// be valid, except examples/rails/config/deploy.yml, which must get
// Kamal's verdict on the reference config.
func TestExamples(t *testing.T) {
	cfgs, err := filepath.Glob("../../examples/*/config/*.yml")
	if err != nil || len(cfgs) < 3 {
		t.Fatalf("examples: %v %v", cfgs, err)
	}
	for _, cfg := range cfgs {
		root := filepath.Dir(filepath.Dir(cfg))
		rel := "config/" + filepath.Base(cfg)
		if strings.Count(filepath.Base(cfg), ".") > 1 {
			continue // a destination file, loaded with its base
		}
		t.Run(filepath.Base(root)+"/"+rel, func(t *testing.T) {
			c, err := Load(os.DirFS(root), LoadOptions{ConfigFile: rel, Revision: testRevision, FingerprintKey: testKey, SecretsEnv: exampleEnv})
			if filepath.Base(root) == "rails" && rel == "config/deploy.yml" {
				want := "config/deploy.yml:4: servers.web: SSL is only supported on a single server unless you provide custom certificates, found 2 servers for role web"
				if !errors.Is(err, ErrInvalid) || err.Error() != want {
					t.Fatalf("reference config: got\n%v\nwant\n%s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("example is invalid:\n%v", err)
			}
			if _, err := c.Plans(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestExamples_RailsUserSecrets checks the user's original .kamal/secrets
// (with $(cat config/master.key)) against the valid rails variant: the
// command is refused with a clear message unless command substitution is
// enabled by the operator.
func TestExamples_RailsUserSecrets(t *testing.T) {
	root := "../../examples/rails"
	cfg, err := os.ReadFile(filepath.Join(root, "config/deploy-valid.yml"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"config/deploy.yml": string(cfg),
		".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=$GITHUB_TOKEN\nRAILS_MASTER_KEY=$(cat config/master.key)\n" +
			"DATABASE_URL=$PRODUCTION_DATABASE_URL\nREDIS_URL=$PRODUCTION_REDIS_URL\nCERTIFICATE_PEM=c\nPRIVATE_KEY_PEM=k\n",
	}
	_, err = load(t, files, LoadOptions{SecretsEnv: exampleEnv})
	if !errors.Is(err, ErrUnsafe) {
		t.Fatalf("want ErrUnsafe, got %v", err)
	}
	var refused *Error
	for _, e := range asErrors(t, err) {
		if errors.Is(e, ErrUnsafe) {
			refused = e
		}
	}
	if refused == nil || refused.File != ".kamal/secrets" || refused.Line != 2 || refused.Path != "RAILS_MASTER_KEY" {
		t.Errorf("refusal not located at .kamal/secrets:2 RAILS_MASTER_KEY: %v", refused)
	}
	c, err := load(t, files, LoadOptions{SecretsEnv: exampleEnv, RunCommand: func(cmd string) (string, error) {
		if cmd != "cat config/master.key" {
			t.Errorf("ran %q", cmd)
		}
		return "master-key-from-file\n", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("203.0.113.10")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Apps[0].EnvFile.Content.Reveal(); !strings.Contains(got, "RAILS_MASTER_KEY=master-key-from-file\n") {
		t.Errorf("env file = %q", got)
	}
}
