package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/crypto/ssh"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// TestNewPool_DaemonIgnoresRepoKeyFiles: deploy.yml's ssh.keys names a
// file on the deploying machine. `capstan apply` reads it (as kamal does);
// the daemon does not let a repository choose one of its files as a key:
// it uses its own identity.
func TestNewPool_DaemonIgnoresRepoKeyFiles(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	identity := filepath.Join(dir, "daemon_key")
	if err := os.WriteFile(identity, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other-app-key") // never created: reading it fails
	yml := "service: app\nimage: app\nservers: [192.0.2.1]\nregistry: {server: r.example, username: u, password: p}\n" +
		"builder: {arch: amd64}\nssh:\n  keys: [" + other + "]\nx-capstan: {version: v1}\n"
	cfg, err := kamal.Load(fstest.MapFS{"config/deploy.yml": {Data: []byte(yml)}}, kamal.LoadOptions{FingerprintKey: []byte("k"), LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{identity: identity, getenv: func(string) string { return "" }}
	if _, _, err := newPool(e, cfg, poolOptions{}); err == nil || !strings.Contains(err.Error(), "other-app-key") {
		t.Errorf("capstan apply: the key file deploy.yml names was not read: %v", err)
	}
	pool, _, err := newPool(e, cfg, poolOptions{NoRepoKeyFiles: true})
	if err != nil {
		t.Fatalf("daemon: %v", err)
	}
	pool.Close()
}
