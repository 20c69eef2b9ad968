package gitwatch

import (
	"context"
	"errors"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gitRepo makes a real repository with the git CLI.
type gitRepo struct {
	t   testing.TB
	dir string
}

func newGitRepo(t testing.TB) *gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	g := &gitRepo{t: t, dir: t.TempDir()}
	g.git("init", "-q", "-b", "main")
	return g
}

func (g *gitRepo) git(args ...string) string {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+g.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (g *gitRepo) commit(file, content, msg string) string {
	g.t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(g.dir, file)), 0o755); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, file), []byte(content), 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.git("add", "-A")
	g.git("commit", "-q", "-m", msg)
	return g.git("rev-parse", "HEAD")
}

func TestRepo_SyncFollowsBranch(t *testing.T) {
	g := newGitRepo(t)
	sha1 := g.commit("config/deploy.yml", "service: a\n", "first")
	r, err := Open(t.TempDir(), Source{URL: g.dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	head, err := r.RemoteHead(ctx)
	if err != nil || head != sha1 {
		t.Fatalf("RemoteHead = %s, %v; want %s", head, err, sha1)
	}
	rev, changed, err := r.Sync(ctx)
	if err != nil || !changed || rev.SHA != sha1 {
		t.Fatalf("first Sync = %+v, %v, %v", rev, changed, err)
	}
	if rev.Author != "Ada" || rev.Message != "first" {
		t.Errorf("revision metadata %+v", rev)
	}
	b, err := os.ReadFile(filepath.Join(rev.Dir, "config/deploy.yml"))
	if err != nil || string(b) != "service: a\n" {
		t.Fatalf("checkout content %q, %v", b, err)
	}

	// Nothing moved: no new checkout.
	rev2, changed, err := r.Sync(ctx)
	if err != nil || changed || rev2 != rev {
		t.Fatalf("second Sync = %+v, %v, %v; want unchanged", rev2, changed, err)
	}

	// A new commit is picked up; the old checkout is pruned.
	sha2 := g.commit("config/deploy.yml", "service: b\n", "second")
	rev3, changed, err := r.Sync(ctx)
	if err != nil || !changed || rev3.SHA != sha2 {
		t.Fatalf("third Sync = %+v, %v, %v; want %s", rev3, changed, err, sha2)
	}
	if b, _ := os.ReadFile(filepath.Join(rev3.Dir, "config/deploy.yml")); string(b) != "service: b\n" {
		t.Errorf("new checkout content %q", b)
	}
	if _, err := os.Stat(rev.Dir); !os.IsNotExist(err) {
		t.Errorf("old checkout %s still there: %v", rev.Dir, err)
	}

	// git revert rolls the content back, as a new revision.
	g.git("revert", "--no-edit", "HEAD")
	rev4, changed, err := r.Sync(ctx)
	if err != nil || !changed {
		t.Fatalf("after revert: %+v, %v, %v", rev4, changed, err)
	}
	if b, _ := os.ReadFile(filepath.Join(rev4.Dir, "config/deploy.yml")); string(b) != "service: a\n" {
		t.Errorf("reverted content %q", b)
	}
}

func TestRepo_Errors(t *testing.T) {
	g := newGitRepo(t)
	g.commit("a", "a", "a")
	ctx := context.Background()
	r, _ := Open(t.TempDir(), Source{URL: g.dir, Branch: "nope"})
	if _, err := r.RemoteHead(ctx); !errors.Is(err, ErrBranchNotFound) {
		t.Errorf("missing branch: %v", err)
	}
	r, _ = Open(t.TempDir(), Source{URL: filepath.Join(t.TempDir(), "missing")})
	if _, _, err := r.Sync(ctx); !errors.Is(err, ErrUnreachable) {
		t.Errorf("missing repo: %v", err)
	}
	r, _ = Open(t.TempDir(), Source{URL: "ssh://git@127.0.0.1:1/x.git"})
	if _, err := r.RemoteHead(ctx); !errors.Is(err, ErrAuth) {
		t.Errorf("ssh without known_hosts must be refused before dialing: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("https://user:tok3n@example.com/x.git"); strings.Contains(got, "tok3n") {
		t.Errorf("redactURL kept the token: %s", got)
	}
}

// TestRepo_HTTPSTokenAuth serves the repository over smart HTTP (git
// http-backend) behind basic auth: the token gets in, no token does not.
func TestRepo_HTTPSTokenAuth(t *testing.T) {
	g := newGitRepo(t)
	sha := g.commit("config/deploy.yml", "service: a\n", "first")
	url := g.serveHTTP(basicAuth("x-access-token", "tok3n"))
	ctx := context.Background()
	r, _ := Open(t.TempDir(), Source{URL: url, Auth: Auth{Token: "tok3n"}})
	rev, changed, err := r.Sync(ctx)
	if err != nil || !changed || rev.SHA != sha {
		t.Fatalf("with the token: %+v %v %v", rev, changed, err)
	}
	r, _ = Open(t.TempDir(), Source{URL: url})
	if _, _, err := r.Sync(ctx); !errors.Is(err, ErrAuth) {
		t.Fatalf("without a token: %v, want ErrAuth", err)
	}
	r, _ = Open(t.TempDir(), Source{URL: url, Auth: Auth{Token: "wrong"}})
	if _, err := r.RemoteHead(ctx); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong token: %v, want ErrAuth", err)
	} else if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error shows the token: %v", err)
	}
}

// serveHTTP serves the repository over smart HTTP (git http-backend)
// until the test ends, each request passing guard first (nil: none; a
// guard returning false has answered it). It returns the repository URL.
func (g *gitRepo) serveHTTP(guard func(w http.ResponseWriter, r *http.Request) bool) string {
	gitPath, _ := exec.LookPath("git")
	backend := &cgi.Handler{Path: gitPath, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(g.dir), "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if guard == nil || guard(w, r) {
			backend.ServeHTTP(w, r)
		}
	}))
	g.t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(g.dir) + "/.git"
}

// basicAuth is a serveHTTP guard letting in user with password only.
func basicAuth(user, password string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return false
		}
		return true
	}
}
