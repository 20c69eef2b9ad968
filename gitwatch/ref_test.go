package gitwatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pullRef commits file on a side branch off main and leaves the commit
// only at refs/pull/n/head, the way a forge keeps a pull request's head.
func (g *gitRepo) pullRef(n, file, content string) string {
	g.t.Helper()
	g.git("checkout", "-q", "-b", "pr"+n, "main")
	sha := g.commit(file, content, "pull "+n)
	g.git("checkout", "-q", "main")
	g.git("update-ref", "refs/pull/"+n+"/head", sha)
	g.git("branch", "-q", "-D", "pr"+n)
	return sha
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRepo_CheckoutRef(t *testing.T) {
	g := newGitRepo(t)
	g.commit("config/deploy.yml", "service: a\n", "base")
	g.commit("config/deploy.yml", "service: b\n", "main head")
	pr := g.pullRef("1", "config/deploy.yml", "service: pr\n")
	cache := t.TempDir()
	r := openRepo(t, cache, g)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	main, _, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}

	rev, err := r.CheckoutRef(ctx, "refs/pull/1/head", pr)
	if err != nil {
		t.Fatal(err)
	}
	if rev.SHA != pr || rev.Author != "Ada" || rev.Email != "ada@example.com" || rev.Message != "pull 1" || rev.Branch != "" || rev.Time.IsZero() {
		t.Errorf("revision %+v", rev)
	}
	if got := readFile(t, filepath.Join(rev.Dir, "config/deploy.yml")); got != "service: pr\n" {
		t.Errorf("ref checkout content %q", got)
	}
	if !strings.HasPrefix(rev.Dir, filepath.Join(cache, refsDir)+string(filepath.Separator)) {
		t.Errorf("ref checkout at %s, not under %s", rev.Dir, filepath.Join(cache, refsDir))
	}
	// Depth 1: the PR head's parent (main's head) was not fetched.
	if shallow := readFile(t, filepath.Join(rev.Dir, ".git", "shallow")); !strings.Contains(shallow, pr) {
		t.Errorf("ref checkout is not shallow at its head: shallow = %q", shallow)
	}
	// The branch checkout is untouched, and a Sync to a new main head does
	// not prune the ref checkout.
	if got := readFile(t, filepath.Join(main.Dir, "config/deploy.yml")); got != "service: b\n" {
		t.Errorf("branch checkout content %q after CheckoutRef", got)
	}
	next := g.commit("config/deploy.yml", "service: c\n", "main moves")
	syncRev(t, r, next)
	if got := readFile(t, filepath.Join(rev.Dir, "config/deploy.yml")); got != "service: pr\n" {
		t.Errorf("ref checkout after Sync: %q", got)
	}

	// Again: the same checkout is reused; no wanted SHA takes the head.
	again, err := r.CheckoutRef(ctx, "refs/pull/1/head", "")
	if err != nil || again.Dir != rev.Dir {
		t.Errorf("second CheckoutRef = %+v, %v; want the same dir %s", again, err, rev.Dir)
	}

	// A new push to the PR: asking for the old SHA says the ref moved.
	g.git("checkout", "-q", "--detach", pr)
	pr2 := g.commit("config/deploy.yml", "service: pr2\n", "pull 1 again")
	g.git("checkout", "-q", "main")
	g.git("update-ref", "refs/pull/1/head", pr2)
	if _, err := r.CheckoutRef(ctx, "refs/pull/1/head", pr); !errors.Is(err, ErrRefMoved) {
		t.Errorf("stale wanted SHA: %v, want ErrRefMoved", err)
	} else if !strings.Contains(err.Error(), pr2[:12]) {
		t.Errorf("ErrRefMoved does not name the new head: %v", err)
	}
	if rev2, err := r.CheckoutRef(ctx, "refs/pull/1/head", pr2); err != nil || rev2.SHA != pr2 {
		t.Errorf("new head: %+v, %v", rev2, err)
	}

	if _, err := r.CheckoutRef(ctx, "refs/pull/9/head", ""); !errors.Is(err, ErrRefNotFound) {
		t.Errorf("missing ref: %v, want ErrRefNotFound", err)
	}
	for _, bad := range []string{"", "pull/1/head", "refs/pull/../x", "refs/pull/1/head\x00"} {
		if _, err := r.CheckoutRef(ctx, bad, ""); err == nil {
			t.Errorf("CheckoutRef(%q) accepted", bad)
		}
	}
}

func TestRepo_CheckoutRefKeepsTheLast(t *testing.T) {
	g := newGitRepo(t)
	g.commit("a", "a", "base")
	r := openRepo(t, t.TempDir(), g)
	ctx := context.Background()
	var dirs []string
	for _, n := range []string{"1", "2", "3", "4", "5", "6"} {
		sha := g.pullRef(n, "a", "pull "+n)
		rev, err := r.CheckoutRef(ctx, "refs/pull/"+n+"/head", sha)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, rev.Dir)
	}
	ents, err := os.ReadDir(filepath.Join(r.dir, refsDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != RefCheckoutsKept {
		t.Fatalf("%d ref checkouts kept, want %d", len(ents), RefCheckoutsKept)
	}
	for i, d := range dirs {
		_, err := os.Stat(d)
		if kept := i >= len(dirs)-RefCheckoutsKept; kept != (err == nil) {
			t.Errorf("checkout %d: kept %v, stat %v", i+1, kept, err)
		}
	}
}

// TestRepo_CheckoutRefTooLarge: the Source's limits hold for a ref, and
// the refused checkout leaves nothing behind.
func TestRepo_CheckoutRefTooLarge(t *testing.T) {
	g := newGitRepo(t)
	small := g.commit("a", "a", "base")
	big := g.importTree(emptyFiles(20))
	g.git("update-ref", "refs/pull/2/head", big)
	g.git("update-ref", "refs/heads/main", small)
	r, _ := Open(t.TempDir(), Source{URL: g.dir, MaxFiles: 10})
	ctx := context.Background()
	if _, _, err := r.Sync(ctx); err != nil {
		t.Fatalf("main within the limits: %v", err)
	}
	if _, err := r.CheckoutRef(ctx, "refs/pull/2/head", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("CheckoutRef = %v, want ErrTooLarge", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.dir, refsDir)); len(ents) != 0 {
		t.Errorf("%d entries left after the refusal", len(ents))
	}
	if r.Current() == nil || r.Current().SHA != small {
		t.Errorf("branch revision disturbed: %+v", r.Current())
	}
}

// TestRepo_CheckoutRefOverHTTPS fetches a pull request ref over smart
// HTTP with a token.
func TestRepo_CheckoutRefOverHTTPS(t *testing.T) {
	g := newGitRepo(t)
	g.commit("a", "a", "base")
	pr := g.pullRef("3", "a", "pull 3")
	url := g.serveHTTP(basicAuth("x-access-token", "tok3n"))
	ctx := context.Background()
	r, _ := Open(t.TempDir(), Source{URL: url, Auth: Auth{Token: "tok3n"}})
	rev, err := r.CheckoutRef(ctx, "refs/pull/3/head", pr)
	if err != nil || rev.SHA != pr {
		t.Fatalf("with the token: %+v, %v", rev, err)
	}
	if got := readFile(t, filepath.Join(rev.Dir, "a")); got != "pull 3" {
		t.Errorf("content %q", got)
	}
	r, _ = Open(t.TempDir(), Source{URL: url, Auth: Auth{Token: "wrong"}})
	if _, err := r.CheckoutRef(ctx, "refs/pull/3/head", pr); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong token: %v, want ErrAuth", err)
	} else if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error shows the token: %v", err)
	}
}
