package kamal

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCapstanAndSSHBlocks(t *testing.T) {
	dir := filepath.Join("testdata", "corpus", "valid-capstan-haproxy")
	c, err := Load(os.DirFS(dir), LoadOptions{SecretsEnv: map[string]string{"REGISTRY_TOKEN": "tok"}, FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	x := c.Capstan
	if x.Proxy != "haproxy" || x.HAProxy.Image != "10.231.0.1:5000/haproxy:lab" || x.HAProxy.HTTPPort != 8080 || !x.SelfHeal || !x.NoRollback || x.RebootAccessories {
		t.Errorf("x-capstan: %+v", x)
	}
	s := c.SSH
	if s.User != "deploy" || s.Port != 2222 || s.Proxy != "root@bastion.example.com" || !s.KeysOnly || len(s.Keys) != 1 || len(s.KeyData) != 1 || s.KeyData[0].Reveal() != "tok-key" {
		t.Errorf("ssh: %+v", s)
	}
	found := false
	for _, v := range c.SecretValues() {
		found = found || v == "tok-key"
	}
	if !found {
		t.Error("ssh.key_data value is not among the secrets to redact")
	}
	// Defaults without the block.
	c, err = Load(os.DirFS(filepath.Join("testdata", "corpus", "valid-accessory-only")), LoadOptions{SecretsEnv: map[string]string{"REGISTRY_TOKEN": "tok"}, Version: "v1", FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Capstan.Proxy != "kamal-proxy" || c.Capstan.SelfHeal || c.Capstan.NoRollback || c.SSH.User != "" {
		t.Errorf("defaults: %+v %+v", c.Capstan, c.SSH)
	}
}
