package kamal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadDir_RefusesSymlinksOutOfTheCheckout(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "capstan-secrets.env")
	if err := os.WriteFile(outside, []byte("REGISTRY_PASSWORD=outside-value-123\nSECRET_KEY=outside-secret-456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deploy := "service: app\nimage: app\nservers: [10.0.0.1]\nregistry:\n  username: u\n  password: [REGISTRY_PASSWORD]\nbuilder:\n  arch: amd64\n"
	for _, c := range []struct {
		name, link, target string
	}{
		{"deploy.yml", "config/deploy.yml", "/etc/shadow"},
		{"secrets", ".kamal/secrets", outside},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_ = os.MkdirAll(filepath.Join(dir, "config"), 0o755)
			_ = os.MkdirAll(filepath.Join(dir, ".kamal"), 0o755)
			_ = os.WriteFile(filepath.Join(dir, "config/deploy.yml"), []byte(deploy), 0o644)
			_ = os.WriteFile(filepath.Join(dir, ".kamal/secrets"), []byte("REGISTRY_PASSWORD=in-repo\n"), 0o644)
			_ = os.Remove(filepath.Join(dir, c.link))
			if err := os.Symlink(c.target, filepath.Join(dir, c.link)); err != nil {
				t.Fatal(err)
			}
			_, err := LoadDir(dir, LoadOptions{Version: "v1"})
			if err == nil {
				t.Fatalf("a %s linking out of the checkout loaded", c.link)
			}
			t.Logf("%s → %s: %v", c.link, c.target, err)
			if !strings.Contains(err.Error(), c.link) || strings.Contains(err.Error(), "outside-") {
				t.Errorf("error %q: want it to name %s and hold nothing read outside", err, c.link)
			}
		})
	}
	// A symlink that stays inside the checkout is followed.
	dir := t.TempDir()
	_ = os.MkdirAll(filepath.Join(dir, "config"), 0o755)
	_ = os.MkdirAll(filepath.Join(dir, ".kamal"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "config/real.yml"), []byte(deploy), 0o644)
	_ = os.WriteFile(filepath.Join(dir, ".kamal/secrets"), []byte("REGISTRY_PASSWORD=in-repo\n"), 0o644)
	if err := os.Symlink("real.yml", filepath.Join(dir, "config/deploy.yml")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir, LoadOptions{Version: "v1"}); err != nil {
		t.Fatalf("in-checkout symlink: %v", err)
	}
}
