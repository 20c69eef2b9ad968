package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrust_Config: the verify and pull_requests blocks are checked at
// load, each problem at its FILE:LINE and key (a broken allowed_signers
// names its own file and line).
func TestTrust_Config(t *testing.T) {
	signers := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(signers, []byte("ada@example.com ssh-ed25519 not-base64!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, `apps:
  - name: a
    repo: /r
    verify: {mode: some, ssh_allowed_signers: `+signers+`}
    pull_requests: {provider: bitbucket}
  - name: b
    repo: /r
    verify: {}
    pull_requests: {provider: gitea, token_env: UNSET}
`)
	_, err := LoadConfig(p, func(string) string { return "" })
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{
		p + `:4: apps[0].verify.mode: "some": want head or all`,
		p + ":4: apps[0].verify: signature policy: " + signers + ":1: no valid public key",
		p + `:5: apps[0].pull_requests.provider: "bitbucket": want github, gitea or gitlab`,
		p + ":5: apps[0].pull_requests.token_env: is required",
		p + ":8: apps[1].verify: ssh_allowed_signers or gpg_keys is required",
		p + ":9: apps[1].pull_requests.api: is required for gitea",
		p + ":9: apps[1].pull_requests.token_env: environment variable UNSET is not set",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
