// Package webhook verifies and reads push webhooks from GitHub, GitLab and
// Gitea/Forgejo. A webhook is only a hint that a repository moved: the
// caller fetches and trusts what git says, never the payload's SHAs.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
)

// Sentinel errors.
var (
	// ErrSignature: the request is not signed with the shared secret.
	ErrSignature = errors.New("bad webhook signature")
	// ErrPayload: the body is not a push event we understand.
	ErrPayload = errors.New("unreadable webhook payload")
)

// VerifyGitHub checks X-Hub-Signature-256 ("sha256=<hex HMAC of body>").
func VerifyGitHub(secret []byte, header string, body []byte) error {
	return verifyHMAC(secret, strings.TrimPrefix(header, "sha256="), body, strings.HasPrefix(header, "sha256="))
}

// VerifyGitea checks X-Gitea-Signature / X-Forgejo-Signature (hex HMAC).
func VerifyGitea(secret []byte, header string, body []byte) error {
	return verifyHMAC(secret, header, body, header != "")
}

func verifyHMAC(secret []byte, sigHex string, body []byte, present bool) error {
	if len(secret) == 0 || !present {
		return ErrSignature
	}
	got, err := hex.DecodeString(sigHex)
	if err != nil {
		return ErrSignature
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return ErrSignature
	}
	return nil
}

// VerifyGitLab checks X-Gitlab-Token against the shared token in constant
// time.
func VerifyGitLab(token []byte, header string) error {
	if len(token) == 0 || subtle.ConstantTimeCompare(token, []byte(header)) != 1 {
		return ErrSignature
	}
	return nil
}

// Push is what capstan reads from a push event.
type Push struct {
	// Ref is the pushed ref, e.g. "refs/heads/main".
	Ref string
	// URLs are every URL the payload gives for the repository.
	URLs []string
	// Sender is the login of who pushed, as the forge says (GitHub and
	// Gitea: sender.login; GitLab: user_username); "" when absent.
	Sender string
}

// Branch returns the branch name of Ref ("" for tags and others).
func (p Push) Branch() string {
	if b, ok := strings.CutPrefix(p.Ref, "refs/heads/"); ok {
		return b
	}
	return ""
}

// ParsePush reads a push event of GitHub, GitLab or Gitea (their shapes
// overlap: ref plus a repository or project object with URLs).
func ParsePush(body []byte) (Push, error) {
	var raw struct {
		Ref        string         `json:"ref"`
		Repository map[string]any `json:"repository"`
		Project    map[string]any `json:"project"`
		Sender     struct {
			Login string `json:"login"`
		} `json:"sender"`
		UserUsername string `json:"user_username"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Push{}, ErrPayload
	}
	p := Push{Ref: raw.Ref, Sender: raw.Sender.Login}
	if p.Sender == "" {
		p.Sender = raw.UserUsername
	}
	for _, obj := range []map[string]any{raw.Repository, raw.Project} {
		for _, k := range []string{"clone_url", "ssh_url", "git_url", "html_url", "url", "git_http_url", "git_ssh_url", "http_url", "web_url", "homepage"} {
			if s, ok := obj[k].(string); ok && s != "" {
				p.URLs = append(p.URLs, s)
			}
		}
	}
	if p.Ref == "" || len(p.URLs) == 0 {
		return p, ErrPayload
	}
	return p, nil
}

// NormalizeURL reduces a repository URL to "host/path" in lower case, so
// that https://github.com/Acme/App.git, git@github.com:acme/app and
// ssh://git@github.com/acme/app compare equal. Local paths are returned
// cleaned.
func NormalizeURL(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	var host, path string
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" {
		host, path = u.Hostname(), u.Path
	} else if at := strings.Index(s, "@"); at >= 0 && strings.Contains(s[at:], ":") && !strings.Contains(s, "://") {
		rest := s[at+1:]
		host, path, _ = strings.Cut(rest, ":")
	} else {
		return strings.TrimSuffix(strings.TrimRight(s, "/"), ".git")
	}
	path = strings.Trim(path, "/")
	path = strings.TrimSuffix(path, ".git")
	return strings.ToLower(host + "/" + path)
}

// Matches reports whether repoURL is one of the push's repository URLs.
func (p Push) Matches(repoURL string) bool {
	want := NormalizeURL(repoURL)
	for _, u := range p.URLs {
		if NormalizeURL(u) == want {
			return true
		}
	}
	return false
}
