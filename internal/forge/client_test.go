package forge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/capstan-dev/capstan/internal/httpjson"
)

const testToken = "s3cr3t-t0ken"

// fakeForge serves the status and comment endpoints of one provider
// from memory and records every request.
type fakeForge struct {
	t        *testing.T
	provider Provider
	mu       sync.Mutex
	calls    []string // "METHOD PATH?QUERY"
	statuses []map[string]string
	comments []note
	nextID   int64
	fail     int  // answer every request with this status, when set
	noPaging bool // list every comment on every page (a forge ignoring page)
	editCode int  // answer edits with this status, when set
	server   *httptest.Server
}

func newFakeForge(t *testing.T, p Provider) *fakeForge {
	f := &fakeForge{t: t, provider: p, nextID: 1000}
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.server.Close)
	return f
}

// api is the API base a client is given.
func (f *fakeForge) api() string {
	if f.provider == Gitea {
		return f.server.URL + "/api/v1"
	}
	return f.server.URL + "/api"
}

// seed adds n comments, the one at index marked holding marker.
func (f *fakeForge) seed(n, marked int, marker string) {
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("comment %d", i)
		if i == marked {
			body = marker + "\nold plan"
		}
		f.comments = append(f.comments, note{ID: f.id(), Body: body})
	}
}

func (f *fakeForge) id() int64 { f.nextID++; return f.nextID }

var (
	hubStatus   = regexp.MustCompile(`^/repos/acme/app/statuses/([0-9a-f]{40})$`)
	hubList     = regexp.MustCompile(`^/repos/acme/app/issues/7/comments$`)
	hubEdit     = regexp.MustCompile(`^/repos/acme/app/issues/comments/(\d+)$`)
	gitlabStat  = regexp.MustCompile(`^/projects/42/statuses/([0-9a-f]{40})$`)
	gitlabNotes = regexp.MustCompile(`^/projects/42/merge_requests/7/notes$`)
	gitlabEdit  = regexp.MustCompile(`^/projects/42/merge_requests/7/notes/(\d+)$`)
)

func (f *fakeForge) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api/v1"), "/api")
	f.calls = append(f.calls, r.Method+" "+path+"?"+r.URL.RawQuery)
	if !f.authorized(r) {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	if f.fail != 0 {
		http.Error(w, `{"message":"`+strings.Repeat("boom ", 100)+`"}`, f.fail)
		return
	}
	var in map[string]string
	if r.Body != nil {
		_ = json.NewDecoder(r.Body).Decode(&in)
	}
	status, list, edit := hubStatus, hubList, hubEdit
	editMethod := http.MethodPatch
	if f.provider == GitLab {
		status, list, edit, editMethod = gitlabStat, gitlabNotes, gitlabEdit, http.MethodPut
	}
	switch {
	case r.Method == http.MethodPost && status.MatchString(path):
		f.statuses = append(f.statuses, in)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":1}`)
	case r.Method == http.MethodGet && list.MatchString(path):
		f.list(w, r)
	case r.Method == http.MethodPost && list.MatchString(path):
		f.comments = append(f.comments, note{ID: f.id(), Body: in["body"]})
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(f.comments[len(f.comments)-1])
	case r.Method == editMethod && edit.MatchString(path):
		if f.editCode != 0 {
			http.Error(w, "{}", f.editCode)
			return
		}
		id, _ := strconv.ParseInt(edit.FindStringSubmatch(path)[1], 10, 64)
		for i := range f.comments {
			if f.comments[i].ID == id {
				f.comments[i].Body = in["body"]
				json.NewEncoder(w).Encode(f.comments[i])
				return
			}
		}
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	default:
		http.Error(w, `{"message":"no route"}`, http.StatusNotFound)
	}
}

func (f *fakeForge) authorized(r *http.Request) bool {
	switch f.provider {
	case GitHub:
		return r.Header.Get("Authorization") == "Bearer "+testToken
	case Gitea:
		return r.Header.Get("Authorization") == "token "+testToken
	}
	return r.Header.Get("PRIVATE-TOKEN") == testToken && r.Header.Get("Authorization") == ""
}

func (f *fakeForge) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if f.provider == Gitea {
		per, _ = strconv.Atoi(q.Get("limit"))
	}
	page, _ := strconv.Atoi(q.Get("page"))
	if per <= 0 || per > 100 {
		per = 30
	}
	if page <= 0 {
		page = 1
	}
	out := f.comments
	if !f.noPaging {
		lo, hi := min((page-1)*per, len(out)), min(page*per, len(out))
		out = out[lo:hi]
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeForge) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func testPR(p Provider) PullRequest {
	pr := PullRequest{Provider: p, Repo: "acme/app", Number: 7, HeadSHA: strings.Repeat("ab", 20)}
	if p == GitLab {
		pr.Repo, pr.ProjectID = "infra/app", 42
	}
	return pr
}

func newTestClient(t *testing.T, f *fakeForge) Client {
	t.Helper()
	c, err := New(f.provider, f.api(), testToken, "capstan/web", f.server.Client())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var providers = []Provider{GitHub, Gitea, GitLab}

func TestClient_SetStatus(t *testing.T) {
	want := map[Provider]map[State]string{
		GitHub: {Pending: "pending", Success: "success", Failure: "failure", Error: "error"},
		Gitea:  {Pending: "pending", Success: "success", Failure: "failure", Error: "error"},
		GitLab: {Pending: "pending", Success: "success", Failure: "failed", Error: "failed"},
	}
	for _, p := range providers {
		t.Run(string(p), func(t *testing.T) {
			f := newFakeForge(t, p)
			c := newTestClient(t, f)
			pr := testPR(p)
			long := strings.Repeat("é", 300)
			for _, st := range []State{Pending, Success, Failure, Error} {
				if err := c.SetStatus(context.Background(), pr, st, long, "https://capstan.example/plan/1"); err != nil {
					t.Fatalf("%s: %v", st, err)
				}
			}
			if len(f.statuses) != 4 {
				t.Fatalf("%d statuses posted, want 4 (calls %v)", len(f.statuses), f.calls)
			}
			ctxKey := "context"
			if p == GitLab {
				ctxKey = "name"
			}
			for i, st := range []State{Pending, Success, Failure, Error} {
				s := f.statuses[i]
				if s["state"] != want[p][st] || s[ctxKey] != "capstan/web" || s["target_url"] != "https://capstan.example/plan/1" {
					t.Errorf("status %d = %v, want state %s", i, s, want[p][st])
				}
				if n := len([]rune(s["description"])); n != MaxDescription {
					t.Errorf("description of %d characters, want %d", n, MaxDescription)
				}
			}
		})
	}
}

func TestClient_UpsertComment(t *testing.T) {
	for _, p := range providers {
		t.Run(string(p), func(t *testing.T) {
			f := newFakeForge(t, p)
			c := newTestClient(t, f)
			pr := testPR(p)
			ctx := context.Background()
			if err := c.UpsertComment(ctx, pr, "web", Marker("web")+"\nplan one"); err != nil {
				t.Fatal(err)
			}
			if len(f.comments) != 1 {
				t.Fatalf("%d comments after the first upsert, want 1", len(f.comments))
			}
			id := f.comments[0].ID
			if err := c.UpsertComment(ctx, pr, "web", Marker("web")+"\nplan two"); err != nil {
				t.Fatal(err)
			}
			if len(f.comments) != 1 || f.comments[0].ID != id || !strings.HasSuffix(f.comments[0].Body, "plan two") {
				t.Fatalf("second upsert did not edit comment %d: %+v", id, f.comments)
			}
			// Another app's comment is its own.
			if err := c.UpsertComment(ctx, pr, "worker", Marker("worker")+"\nplan"); err != nil || len(f.comments) != 2 {
				t.Fatalf("other key: %v, %d comments", err, len(f.comments))
			}
		})
	}
}

func TestClient_UpsertCommentPaginates(t *testing.T) {
	for _, p := range providers {
		t.Run(string(p), func(t *testing.T) {
			f := newFakeForge(t, p)
			f.seed(250, 130, Marker("web")) // on page 2 of 100
			c := newTestClient(t, f)
			if err := c.UpsertComment(context.Background(), testPR(p), "web", Marker("web")+"\nnew"); err != nil {
				t.Fatal(err)
			}
			if len(f.comments) != 250 || !strings.HasSuffix(f.comments[130].Body, "new") {
				t.Fatalf("the marked comment on page 2 was not edited (%d comments, calls %v)", len(f.comments), f.calls)
			}
			if n := f.count("GET "); n != 2 {
				t.Errorf("%d list requests, want 2 (stop at the page with the marker)", n)
			}
			// No marker anywhere: all three pages read, then a new comment.
			if err := c.UpsertComment(context.Background(), testPR(p), "other", "x"); err != nil || len(f.comments) != 251 {
				t.Fatalf("new key: %v, %d comments", err, len(f.comments))
			}
			if n := f.count("GET "); n != 5 {
				t.Errorf("%d list requests in all, want 5", n)
			}
		})
	}
}

// TestClient_UpsertCommentIgnoredPaging: a forge that answers every page
// with all comments (Gitea's list takes no page) ends the walk.
func TestClient_UpsertCommentIgnoredPaging(t *testing.T) {
	f := newFakeForge(t, Gitea)
	f.noPaging = true
	f.seed(150, -1, "")
	c := newTestClient(t, f)
	if err := c.UpsertComment(context.Background(), testPR(Gitea), "web", "x"); err != nil {
		t.Fatal(err)
	}
	if n := f.count("GET "); n != 2 || len(f.comments) != 151 {
		t.Errorf("%d list requests, %d comments; want 2 and 151", n, len(f.comments))
	}
}

// TestClient_UpsertCommentNotOurs: a marked comment the token may not
// edit (someone else's) is left alone and a new one is made.
func TestClient_UpsertCommentNotOurs(t *testing.T) {
	f := newFakeForge(t, GitHub)
	f.seed(1, 0, Marker("web"))
	f.editCode = http.StatusForbidden
	c := newTestClient(t, f)
	if err := c.UpsertComment(context.Background(), testPR(GitHub), "web", Marker("web")+"\nours"); err != nil {
		t.Fatal(err)
	}
	if len(f.comments) != 2 || f.comments[0].Body != Marker("web")+"\nold plan" {
		t.Errorf("comments %+v", f.comments)
	}
}

func TestClient_ErrorsNameTheRequestNotTheToken(t *testing.T) {
	for _, p := range providers {
		t.Run(string(p), func(t *testing.T) {
			f := newFakeForge(t, p)
			f.fail = http.StatusInternalServerError
			c := newTestClient(t, f)
			err := c.SetStatus(context.Background(), testPR(p), Failure, "bad", "")
			var se *httpjson.StatusError
			if !errors.As(err, &se) || se.Code != 500 {
				t.Fatalf("err = %v, want a 500 StatusError", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "POST /") || !strings.Contains(msg, "/statuses/"+testPR(p).HeadSHA) || !strings.Contains(msg, "500") {
				t.Errorf("error %q does not name method, path and status", msg)
			}
			if strings.Contains(msg, testToken) || len(msg) > 200+200 {
				t.Errorf("error shows the token or the whole body (%d bytes): %q", len(msg), msg)
			}
			f.fail = 0
			bad, _ := New(p, f.api(), "wrong-"+testToken, "capstan/web", f.server.Client())
			err = bad.UpsertComment(context.Background(), testPR(p), "web", "x")
			if !errors.As(err, &se) || se.Code != http.StatusUnauthorized || strings.Contains(err.Error(), testToken) {
				t.Errorf("wrong token: %v", err)
			}
		})
	}
}

func TestNew_Refuses(t *testing.T) {
	for name, c := range map[string]struct {
		p              Provider
		api, tok, ctxt string
	}{
		"gitea without API": {Gitea, "", "t", "c"},
		"no token":          {GitHub, "", "", "c"},
		"no context":        {GitLab, "", "t", ""},
		"bad API":           {GitHub, "ftp://x", "t", "c"},
		"unknown":           {"bitbucket", "https://x", "t", "c"},
	} {
		if _, err := New(c.p, c.api, c.tok, c.ctxt, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(GitHub, "", "t", "c", nil); err != nil {
		t.Errorf("GitHub with defaults: %v", err)
	}
}

// TestClient_GitLabProjectPath: without a project id the project path is
// sent escaped as one segment.
func TestClient_GitLabProjectPath(t *testing.T) {
	var got string
	answer := http.StatusCreated
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.EscapedPath()
		if answer == http.StatusBadRequest {
			http.Error(w, `{"message":"Cannot transition status via :enqueue from :pending (Reason(s): Status cannot transition via \"enqueue\")"}`, answer)
			return
		}
		w.WriteHeader(answer)
		fmt.Fprint(w, "{}")
	}))
	defer srv.Close()
	c, _ := New(GitLab, srv.URL, "t", "capstan/web", srv.Client())
	pr := PullRequest{Repo: "infra/deploy/app", Number: 3, HeadSHA: strings.Repeat("c", 40)}
	if err := c.SetStatus(context.Background(), pr, Success, "ok", ""); err != nil {
		t.Fatal(err)
	}
	if want := "/projects/infra%2Fdeploy%2Fapp/statuses/" + pr.HeadSHA; got != want {
		t.Errorf("path %s, want %s", got, want)
	}
	// GitLab refuses a status already in that state: not an error.
	answer = http.StatusBadRequest
	if err := c.SetStatus(context.Background(), pr, Pending, "again", ""); err != nil {
		t.Errorf("same state again: %v", err)
	}
}
