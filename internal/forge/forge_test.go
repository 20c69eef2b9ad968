package forge

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withAction returns body with its action (and, for GitLab, oldrev)
// replaced.
func withAction(body []byte, from, to string) []byte {
	return bytes.Replace(body, []byte(from), []byte(to), 1)
}

func TestParsePullRequest_GitHub(t *testing.T) {
	body := sample(t, "github_pull_request_synchronize.json")
	pr, ok, err := ParsePullRequest(GitHub, "pull_request", body)
	if err != nil || !ok {
		t.Fatalf("synchronize: %v, %v", ok, err)
	}
	want := PullRequest{Provider: GitHub, Repo: "acme/app", Number: 7, HeadSHA: "6dcb09b5b57875f334f61aebed695e2e4193db5e",
		HeadRef: "refs/pull/7/head", BaseRef: "main", Sender: "forker", Action: "synchronize"}
	if pr.Provider != want.Provider || pr.Repo != want.Repo || pr.Number != want.Number || pr.HeadSHA != want.HeadSHA ||
		pr.HeadRef != want.HeadRef || pr.BaseRef != want.BaseRef || pr.Sender != want.Sender || pr.Action != want.Action || pr.ProjectID != 0 {
		t.Errorf("got %+v\nwant %+v", pr, want)
	}
	// The base repository, not the fork the head comes from.
	if !pr.Matches("git@github.com:Acme/App.git") || pr.Matches("https://github.com/forker/app") {
		t.Errorf("Matches on URLs %v", pr.URLs)
	}
	if pr.Key() != "github:acme/app#7" {
		t.Errorf("Key = %q", pr.Key())
	}
	for action, plan := range map[string]bool{"opened": true, "reopened": true, "closed": false, "labeled": false, "edited": false, "assigned": false} {
		_, ok, err := ParsePullRequest(GitHub, "pull_request", withAction(body, `"synchronize"`, `"`+action+`"`))
		if err != nil || ok != plan {
			t.Errorf("action %s: ok=%v err=%v, want ok=%v", action, ok, err, plan)
		}
	}
	for _, ev := range []string{"push", "pull_request_review", "issue_comment", ""} {
		if _, ok, err := ParsePullRequest(GitHub, ev, body); ok || err != nil {
			t.Errorf("event %q: ok=%v err=%v, want no plan", ev, ok, err)
		}
	}
}

func TestParsePullRequest_Gitea(t *testing.T) {
	body := sample(t, "gitea_pull_request_synchronized.json")
	h := http.Header{}
	h.Set("X-Forgejo-Event", "pull_request")
	pr, ok, err := ParsePullRequest(Gitea, EventName(Gitea, h), body)
	if err != nil || !ok {
		t.Fatalf("synchronized: %v, %v", ok, err)
	}
	if pr.Repo != "acme/app" || pr.Number != 12 || pr.HeadRef != "refs/pull/12/head" || pr.BaseRef != "main" ||
		pr.HeadSHA != "ab0cdef0123456789abcdef0123456789abcdef0" || pr.Sender != "dev" || !pr.Matches("https://gitea.example/acme/app") {
		t.Errorf("got %+v", pr)
	}
	if _, ok, err := ParsePullRequest(Gitea, "pull_request", withAction(body, `"synchronized"`, `"closed"`)); ok || err != nil {
		t.Errorf("closed: ok=%v err=%v", ok, err)
	}
	if _, ok, err := ParsePullRequest(Gitea, "pull_request_sync", body); !ok || err != nil {
		t.Errorf("pull_request_sync: ok=%v err=%v", ok, err)
	}
}

func TestParsePullRequest_GitLab(t *testing.T) {
	body := sample(t, "gitlab_merge_request_update.json")
	pr, ok, err := ParsePullRequest(GitLab, "Merge Request Hook", body)
	if err != nil || !ok {
		t.Fatalf("update with oldrev: %v, %v", ok, err)
	}
	if pr.Repo != "infra/deploy/app" || pr.ProjectID != 42 || pr.Number != 3 || pr.HeadRef != "refs/merge-requests/3/head" ||
		pr.HeadSHA != "da1560886d4f094c3e6c9ef40349f7d38b5d27d7" || pr.BaseRef != "main" || pr.Sender != "root" || pr.Action != "update" {
		t.Errorf("got %+v", pr)
	}
	if !pr.Matches("ssh://git@gitlab.example/infra/deploy/app.git") {
		t.Errorf("Matches on URLs %v", pr.URLs)
	}
	noOldrev := withAction(body, `"oldrev": "4444444444444444444444444444444444444444",`, "")
	if _, ok, err := ParsePullRequest(GitLab, "Merge Request Hook", noOldrev); ok || err != nil {
		t.Errorf("update without oldrev (a title edit): ok=%v err=%v, want no plan", ok, err)
	}
	for action, plan := range map[string]bool{"open": true, "reopen": true, "close": false, "merge": false, "approved": false} {
		_, ok, err := ParsePullRequest(GitLab, "Merge Request Hook", withAction(noOldrev, `"update"`, `"`+action+`"`))
		if err != nil || ok != plan {
			t.Errorf("action %s: ok=%v err=%v, want ok=%v", action, ok, err, plan)
		}
	}
	if _, ok, err := ParsePullRequest(GitLab, "Push Hook", body); ok || err != nil {
		t.Errorf("push hook: ok=%v err=%v", ok, err)
	}
}

func TestParsePullRequest_Refuses(t *testing.T) {
	gh := sample(t, "github_pull_request_synchronize.json")
	gl := sample(t, "gitlab_merge_request_update.json")
	for name, c := range map[string]struct {
		p    Provider
		ev   string
		body []byte
	}{
		"not json":          {GitHub, "pull_request", []byte("{")},
		"no pull_request":   {GitHub, "pull_request", []byte(`{"action":"opened","number":1}`)},
		"short sha":         {GitHub, "pull_request", bytes.ReplaceAll(gh, []byte("6dcb09b5b57875f334f61aebed695e2e4193db5e"), []byte("6dcb09b"))},
		"number overflow":   {GitHub, "pull_request", bytes.ReplaceAll(gh, []byte(`"number": 7,`), []byte(`"number": 99999999999,`))},
		"sha not hex":       {GitLab, "Merge Request Hook", bytes.Replace(gl, []byte("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"), []byte("../../../../../../../../../../etc/passwd"), 1)},
		"no target branch":  {GitLab, "Merge Request Hook", bytes.Replace(gl, []byte(`"target_branch": "main",`), nil, 1)},
		"not a merge event": {GitLab, "Merge Request Hook", []byte(`{"object_kind":"push"}`)},
		"unknown provider":  {"bitbucket", "pull_request", gh},
	} {
		if _, ok, err := ParsePullRequest(c.p, c.ev, c.body); ok || !errors.Is(err, ErrPayload) {
			t.Errorf("%s: ok=%v err=%v, want ErrPayload", name, ok, err)
		}
	}
}

func FuzzParsePullRequest(f *testing.F) {
	f.Add("github", "pull_request", sample(f, "github_pull_request_synchronize.json"))
	f.Add("gitea", "pull_request", sample(f, "gitea_pull_request_synchronized.json"))
	f.Add("gitlab", "Merge Request Hook", sample(f, "gitlab_merge_request_update.json"))
	f.Add("github", "pull_request", []byte(`{"action":"opened","number":-1,"pull_request":{"head":{"sha":""}}}`))
	f.Fuzz(func(t *testing.T, provider, event string, body []byte) {
		pr, ok, err := ParsePullRequest(Provider(provider), event, body)
		if err != nil && (ok || !errors.Is(err, ErrPayload)) {
			t.Fatalf("ok=%v with error %v", ok, err)
		}
		if !ok {
			return
		}
		if err := pr.check(); err != nil {
			t.Fatalf("ok with %+v: %v", pr, err)
		}
		n := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(pr.HeadRef, "refs/pull/"), "refs/merge-requests/"), "/head")
		if strings.ContainsAny(n, "/.") || n == "" || n[0] == '0' {
			t.Fatalf("HeadRef %q", pr.HeadRef)
		}
	})
}
