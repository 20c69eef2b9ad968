package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGitHub is the part of GitHub's API capstan posts plans to:
// commit statuses and issue comments of acme/app, recorded.
type fakeGitHub struct {
	*httptest.Server
	mu       sync.Mutex
	statuses map[string][]map[string]any // by SHA, in order
	comments map[int64]string            // by ID
	edits    int
	auth     []string // Authorization headers seen
}

func newFakeGitHub(t *testing.T) *fakeGitHub {
	g := &fakeGitHub{statuses: map[string][]map[string]any{}, comments: map[int64]string{}}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.auth = append(g.auth, r.Header.Get("Authorization"))
		var in map[string]any
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in)
		var sha string
		var id int64
		switch {
		case r.Method == "POST" && sscan(r.URL.Path, "/repos/acme/app/statuses/%s", &sha) == 1:
			g.statuses[sha] = append(g.statuses[sha], in)
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{}`)
		case r.Method == "GET" && r.URL.Path == "/repos/acme/app/issues/1/comments":
			var list []map[string]any
			if r.URL.Query().Get("page") == "1" || r.URL.Query().Get("page") == "" {
				for id, body := range g.comments {
					list = append(list, map[string]any{"id": id, "body": body})
				}
			}
			_ = json.NewEncoder(w).Encode(list)
		case r.Method == "POST" && r.URL.Path == "/repos/acme/app/issues/1/comments":
			id := int64(len(g.comments) + 100)
			g.comments[id] = fmt.Sprint(in["body"])
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id})
		case r.Method == "PATCH" && sscan(r.URL.Path, "/repos/acme/app/issues/comments/%d", &id) == 1:
			if _, ok := g.comments[id]; !ok {
				http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
				return
			}
			g.comments[id] = fmt.Sprint(in["body"])
			g.edits++
			_ = json.NewEncoder(w).Encode(map[string]any{"id": id})
		default:
			t.Errorf("fake GitHub: unexpected %s %s", r.Method, r.URL)
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(g.Close)
	return g
}

func sscan(s, format string, v any) int {
	n, _ := fmt.Sscanf(s, format, v)
	return n
}

// last returns the last status posted for sha ("" state if none) and the
// comments.
func (g *fakeGitHub) last(sha string) (state, desc string, comments []string, edits int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.statuses[sha]; len(st) > 0 {
		state, desc = fmt.Sprint(st[len(st)-1]["state"]), fmt.Sprint(st[len(st)-1]["description"])
	}
	for _, c := range g.comments {
		comments = append(comments, c)
	}
	return state, desc, comments, g.edits
}

// TestE2EPullRequest_PlanPosted: a pull_request webhook gets the plan of
// the PR head (observed on the real hosts, read-only) as one commit status
// and one comment; a push to the PR edits that comment; an invalid config
// gets a failing status with FILE:LINE. Nothing is deployed, no secret is
// posted.
func TestE2EPullRequest_PlanPosted(t *testing.T) {
	gh := newFakeGitHub(t)
	_, w, d, _ := truthLab(t, serveOpts{poll: "1s",
		appExtra: "    pull_requests: {provider: github, api: " + gh.URL + ", token_env: GH_TOKEN, min_interval: 1s}\n",
		env:      []string{"GH_TOKEN=gh-api-token-789"}})
	ld := startLoad(webAddrs)

	w.git("checkout", "-q", "-b", "feature")
	pr := func(action, yml, msg string) string {
		t.Helper()
		sha := w.commit(yml, msg)
		w.git("push", "-q", "-f", "origin", "HEAD:refs/pull/1/head")
		body := []byte(fmt.Sprintf(`{"action":%q,"number":1,"pull_request":{"number":1,"head":{"sha":%q,"ref":"feature"},
			"base":{"ref":"main","repo":{"full_name":"acme/app","clone_url":%q}}},
			"repository":{"full_name":"acme/app","clone_url":%q},"sender":{"login":"ada"}}`, action, sha, d.repo, d.repo))
		mac := hmac.New(sha256.New, []byte("gh-secret"))
		mac.Write(body)
		if code := d.post("/webhooks/github", body, map[string]string{"X-GitHub-Event": "pull_request",
			"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))}); code != http.StatusOK {
			t.Fatalf("pull_request webhook: %d", code)
		}
		return sha
	}
	planned := func(sha, state string) (desc string, comments []string, edits int) {
		t.Helper()
		waitFor(t, 60*time.Second, "the plan of "+sha[:12]+" posted", func() bool {
			st, _, _, _ := gh.last(sha)
			return st == state
		})
		_, desc, comments, edits = gh.last(sha)
		if len(comments) != 1 {
			t.Fatalf("%d comments on the pull request, want 1: %q", len(comments), comments)
		}
		for _, secret := range []string{"s3cret-value-1", "lab-registry-password", "gh-api-token-789"} {
			if strings.Contains(comments[0]+desc, secret) {
				t.Errorf("a secret is in the posted plan: %q", comments[0])
			}
		}
		return desc, comments, edits
	}

	sha1 := pr("opened", deployYML(t, "v2"), "v2 on a branch")
	desc, comments, _ := planned(sha1, "success")
	for _, want := range []string{"capstan:plan:testapp", sha1[:7], "version v2", "10.231.0.11", "10.231.0.12"} {
		if !strings.Contains(comments[0], want) {
			t.Errorf("the comment does not say %q:\n%s", want, comments[0])
		}
	}
	t.Logf("status %q; comment:\n%s", desc, comments[0])

	sha2 := pr("synchronize", deployYML(t, "v3"), "v3 on the branch")
	_, comments, edits := planned(sha2, "success")
	if !strings.Contains(comments[0], "version v3") || !strings.Contains(comments[0], sha2[:7]) || edits != 1 {
		t.Errorf("the second push did not edit the one comment (%d edits):\n%s", edits, comments[0])
	}

	sha3 := pr("synchronize", strings.Replace(deployYML(t, "v3"), "service: ", "service: [", 1), "broken config")
	desc, comments, _ = planned(sha3, "failure")
	t.Logf("status %q; comment:\n%s", desc, comments[0])
	if !strings.Contains(comments[0], "config/deploy.yml:") || !strings.Contains(desc, "error") {
		t.Errorf("the invalid config's status %q and comment do not name the file and line:\n%s", desc, comments[0])
	}
	gh.mu.Lock()
	for _, a := range gh.auth {
		if a != "Bearer gh-api-token-789" {
			t.Errorf("a request to GitHub carried Authorization %q", a)
		}
	}
	gh.mu.Unlock()
	for _, addr := range webAddrs {
		if got := get(t, addr); !strings.HasPrefix(got, "v1 ") {
			t.Errorf("%s serves %q: planning a pull request deployed it", addr, got)
		}
	}
	ld.finish(t, "three pull request plans")
}
