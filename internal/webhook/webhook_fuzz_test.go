package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// Push payloads as the forges send them, trimmed to what a seed needs.
const (
	githubPush = `{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","repository":{"id":1296269,"name":"app","full_name":"acme/app","private":true,"html_url":"https://github.com/acme/app","url":"https://github.com/acme/app","git_url":"git://github.com/acme/app.git","ssh_url":"git@github.com:acme/app.git","clone_url":"https://github.com/acme/app.git","homepage":null},"pusher":{"name":"octocat"},"commits":[]}`
	gitlabPush = `{"object_kind":"push","event_name":"push","ref":"refs/heads/prod","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","project":{"id":15,"name":"app","web_url":"https://gitlab.example.com/acme/app","git_ssh_url":"git@gitlab.example.com:acme/app.git","git_http_url":"https://gitlab.example.com/acme/app.git","homepage":"https://gitlab.example.com/acme/app","http_url":"https://gitlab.example.com/acme/app.git"},"repository":{"name":"app","url":"git@gitlab.example.com:acme/app.git","homepage":"https://gitlab.example.com/acme/app"}}`
	giteaPush  = `{"ref":"refs/heads/main","before":"28e1879d029cb852e4844d9c718537df08844e03","after":"bffeb74224043ba2feb48d137756c8a9331c449a","repository":{"id":140,"name":"app","full_name":"acme/app","html_url":"https://git.example.com/acme/app","ssh_url":"ssh://git@git.example.com:2222/acme/app.git","clone_url":"https://git.example.com/acme/app.git"}}`
)

// FuzzParsePush: any body is ErrPayload, or a push with a ref and between
// one and twenty non-empty repository URLs, each of which matches the push.
func FuzzParsePush(f *testing.F) {
	for _, s := range []string{githubPush, gitlabPush, giteaPush, "", "{}", "null", "[]", `{"ref":"x"}`, `{"ref":5,"repository":{"url":"u"}}`,
		`{"ref":"refs/tags/v1","repository":{"url":"https://h/a"}}`, `{"ref":"refs/heads/main","repository":{"url":7,"clone_url":["x"]}}`,
		`{"ref":"refs/heads/main","repository":"https://h/a"}`, `{"ref":"refs/heads/m\u0000ain","project":{"web_url":"h\nx"}}`,
		strings.Repeat(`{"a":`, 20000) + strings.Repeat("}", 20000), githubPush[:len(githubPush)/2]} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePush(body)
		if err != nil {
			if !errors.Is(err, ErrPayload) {
				t.Fatalf("error %v does not wrap ErrPayload", err)
			}
			return
		}
		if p.Ref == "" || len(p.URLs) == 0 || len(p.URLs) > 20 {
			t.Fatalf("push %+v", p)
		}
		for _, u := range p.URLs {
			if u == "" || !p.Matches(u) {
				t.Fatalf("URL %q of the push does not match it", u)
			}
		}
		if b := p.Branch(); b != "" && "refs/heads/"+b != p.Ref {
			t.Fatalf("branch %q of ref %q", b, p.Ref)
		}
	})
}

// FuzzNormalizeURL: normalizing never panics, and a URL with a scheme and a
// host comes out in lower case.
func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{"https://github.com/Acme/App.git", "git@github.com:acme/app", "ssh://git@github.com/acme/app", "/srv/git/app.git/",
		"", "@:", "git@:", "https://", "ssh://[::1]:22/a", "file:///tmp/x", "http://%zz", "a@b:c@d:e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := NormalizeURL(s)
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil && u.Scheme != "" && u.Host != "" {
			if n != strings.ToLower(n) {
				t.Fatalf("%q normalized to %q", s, n)
			}
		}
	})
}

func hmacHex(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// FuzzVerify: a signature is accepted exactly when the secret is set and
// the header carries the body's HMAC under it (GitHub with "sha256=",
// Gitea bare); the right signature is always accepted, and a one-byte
// change of the body is refused. GitLab's token must equal the secret.
func FuzzVerify(f *testing.F) {
	f.Add([]byte("s3cret"), []byte(githubPush), "sha256=")
	f.Add([]byte("s3cret"), []byte(giteaPush), "")
	f.Add([]byte{}, []byte("{}"), "sha256=00")
	f.Add([]byte("s"), []byte(""), "sha256=ZZ")
	f.Add([]byte("s\x00"), []byte("\x00"), strings.Repeat("a", 1024))
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		good := hmacHex(secret, body)
		if len(secret) > 0 {
			if err := VerifyGitHub(secret, "sha256="+good, body); err != nil {
				t.Fatalf("good GitHub signature refused: %v", err)
			}
			if err := VerifyGitHub(secret, "sha256="+strings.ToUpper(good), body); err != nil {
				t.Fatalf("upper-case GitHub signature refused: %v", err)
			}
			if err := VerifyGitea(secret, good, body); err != nil {
				t.Fatalf("good Gitea signature refused: %v", err)
			}
			changed := append(bytes.Clone(body), 'x')
			if VerifyGitHub(secret, "sha256="+good, changed) == nil || VerifyGitea(secret, good, changed) == nil {
				t.Fatal("signature of another body accepted")
			}
			if err := VerifyGitLab(secret, string(secret)); err != nil {
				t.Fatalf("right GitLab token refused: %v", err)
			}
		}
		for name, err := range map[string]error{
			"github": VerifyGitHub(secret, header, body),
			"gitea":  VerifyGitea(secret, header, body),
			"gitlab": VerifyGitLab(secret, header),
		} {
			if err != nil && !errors.Is(err, ErrSignature) {
				t.Fatalf("%s: error %v does not wrap ErrSignature", name, err)
			}
			sig := strings.TrimPrefix(header, "sha256=")
			want := len(secret) > 0
			switch name {
			case "github":
				want = want && strings.HasPrefix(header, "sha256=") && strings.EqualFold(sig, good)
			case "gitea":
				want = want && strings.EqualFold(header, good)
			case "gitlab":
				want = want && header == string(secret)
			}
			if (err == nil) != want {
				t.Fatalf("%s: header %q accepted=%v, want %v", name, header, err == nil, want)
			}
		}
	})
}
