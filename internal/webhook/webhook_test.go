package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestVerify(t *testing.T) {
	body := `{"ref":"refs/heads/main"}`
	if err := VerifyGitHub([]byte("s"), "sha256="+sign("s", body), []byte(body)); err != nil {
		t.Errorf("good GitHub signature refused: %v", err)
	}
	for _, h := range []string{"", "sha256=", "sha256=" + sign("other", body), sign("s", body), "sha256=zz"} {
		if err := VerifyGitHub([]byte("s"), h, []byte(body)); !errors.Is(err, ErrSignature) {
			t.Errorf("GitHub signature %q accepted", h)
		}
	}
	if err := VerifyGitHub(nil, "sha256="+sign("", body), []byte(body)); !errors.Is(err, ErrSignature) {
		t.Error("empty secret accepted")
	}
	if err := VerifyGitea([]byte("s"), sign("s", body), []byte(body)); err != nil {
		t.Errorf("good Gitea signature refused: %v", err)
	}
	if err := VerifyGitea([]byte("s"), sign("s", body+" "), []byte(body)); !errors.Is(err, ErrSignature) {
		t.Error("Gitea signature of another body accepted")
	}
	if err := VerifyGitLab([]byte("tok"), "tok"); err != nil {
		t.Error(err)
	}
	if err := VerifyGitLab([]byte("tok"), "tok2"); !errors.Is(err, ErrSignature) {
		t.Error("wrong GitLab token accepted")
	}
}

func TestParsePush_AndMatch(t *testing.T) {
	gh := `{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/Acme/App.git","ssh_url":"git@github.com:Acme/App.git"},"sender":{"login":"ada"}}`
	p, err := ParsePush([]byte(gh))
	if err != nil || p.Branch() != "main" || p.Sender != "ada" {
		t.Fatalf("%+v %v", p, err)
	}
	for _, u := range []string{"ssh://git@github.com/acme/app.git", "https://github.com/acme/app", "git@github.com:acme/app"} {
		if !p.Matches(u) {
			t.Errorf("%s does not match %v", u, p.URLs)
		}
	}
	if p.Matches("https://github.com/acme/other") {
		t.Error("another repository matched")
	}
	gl := `{"ref":"refs/heads/prod","project":{"git_http_url":"https://gitlab.com/a/b.git"},"user_username":"grace"}`
	if p, err := ParsePush([]byte(gl)); err != nil || !p.Matches("https://gitlab.com/a/b") || p.Branch() != "prod" || p.Sender != "grace" {
		t.Errorf("gitlab: %+v %v", p, err)
	}
	for _, bad := range []string{"", "{}", `{"ref":"x"}`, "not json"} {
		if _, err := ParsePush([]byte(bad)); !errors.Is(err, ErrPayload) {
			t.Errorf("%q parsed", bad)
		}
	}
}
