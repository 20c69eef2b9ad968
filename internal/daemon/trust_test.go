package daemon

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/reconcile"
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

// TestTrust_ModeAll: mode head judges the commit to deploy; mode all
// every commit since the last one let through, so an unsigned commit
// under a signed head is refused, named.
func TestTrust_ModeAll(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(t.TempDir(), "signer")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+dir,
			"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com", "GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	signers := filepath.Join(t.TempDir(), "allowed_signers")
	f := strings.Fields(string(pub))
	if err := os.WriteFile(signers, []byte("ada@example.com "+f[0]+" "+f[1]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("git", "init", "-q", "-b", "main", ".")
	run("git", "config", "gpg.format", "ssh")
	run("git", "config", "user.signingkey", key)
	commit := func(msg string, sign bool) string {
		flag := "--no-gpg-sign"
		if sign {
			flag = "-S"
		}
		run("git", "commit", "-q", "--allow-empty", flag, "-m", msg)
		return run("git", "rev-parse", "HEAD")
	}
	c1 := commit("signed", true)
	c2 := commit("unsigned", false)
	c3 := commit("signed on top", true)
	for _, c := range []struct {
		mode, base, head string
		refused          string // "" = trusted
	}{
		{VerifyHead, c1, c3, ""},
		{VerifyHead, c1, c2, "unsigned"},
		{VerifyAll, c1, c3, c2[:12]},
		{VerifyAll, c2, c3, ""},
		{VerifyAll, "", c3, ""}, // nothing deployed yet: the head alone
	} {
		tr, err := (&Daemon{}).newTrustFrom(AppConfig{Verify: &VerifyConfig{Mode: c.mode, SSHAllowedSigners: signers}}, c.base)
		if err != nil {
			t.Fatal(err)
		}
		err = tr.check(t.Context(), reconcile.Revision{SHA: c.head, Dir: dir})
		switch {
		case c.refused == "" && err != nil:
			t.Errorf("mode %s %s..%s: refused: %v", c.mode, c.base, c.head, err)
		case c.refused != "" && (!errors.Is(err, reconcile.ErrUntrusted) || !strings.Contains(err.Error(), c.refused)):
			t.Errorf("mode %s, base %.7s, head %.7s: %v, want refused naming %q", c.mode, c.base, c.head, err, c.refused)
		}
	}
}
