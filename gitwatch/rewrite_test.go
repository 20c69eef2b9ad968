package gitwatch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syncRev syncs r and fails the test unless the head moved to want.
func syncRev(t *testing.T, r *Repo, want string) *Revision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rev, changed, err := r.Sync(ctx)
	if err != nil || !changed || rev.SHA != want {
		t.Fatalf("Sync = %+v, %v, %v; want a change to %s", rev, changed, err, want)
	}
	return rev
}

func openRepo(t *testing.T, cache string, g *gitRepo) *Repo {
	t.Helper()
	r, err := Open(cache, Source{URL: g.dir})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantRewrite checks the rewrite fields of rev.
func wantRewrite(t *testing.T, rev *Revision, prev string, kind RewriteKind) {
	t.Helper()
	if rev.Previous != prev {
		t.Errorf("Previous = %q, want %q", rev.Previous, prev)
	}
	if rev.Rewrite != kind {
		t.Fatalf("Rewrite = %q (%s), want %q", rev.Rewrite, rev.Rewritten, kind)
	}
	if kind == "" {
		if rev.Rewritten != "" {
			t.Errorf("Rewritten = %q for no rewrite", rev.Rewritten)
		}
		return
	}
	for _, s := range []string{prev[:7], rev.SHA[:7], "main"} {
		if !strings.Contains(rev.Rewritten, s) {
			t.Errorf("Rewritten %q does not name %s", rev.Rewritten, s)
		}
	}
	if strings.Contains(rev.Rewritten, "\n") {
		t.Errorf("Rewritten is not one line: %q", rev.Rewritten)
	}
}

// commits appends n commits to branch main quickly (git fast-import),
// each changing one file, and returns the new head.
func (g *gitRepo) commits(n int, tag string) string {
	g.t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("%s %d", tag, i)
		fmt.Fprintf(&b, "commit refs/heads/main\ncommitter Ada <ada@example.com> %d +0000\ndata %d\n%s\n", 1700000000+i, len(msg), msg)
		if i == 0 {
			b.WriteString("from refs/heads/main^0\n")
		}
		fmt.Fprintf(&b, "M 100644 inline log.txt\ndata %d\n%s\n", len(msg), msg)
	}
	g.fastImport(b.String())
	g.git("reset", "-q", "--hard", "main")
	return g.git("rev-parse", "main")
}

// fastImport feeds stream to git fast-import in g.
func (g *gitRepo) fastImport(stream string) {
	g.t.Helper()
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = g.dir
	cmd.Stdin = strings.NewReader(stream)
	if out, err := cmd.CombinedOutput(); err != nil {
		g.t.Fatalf("git fast-import: %v\n%s", err, out)
	}
}

func TestRepo_RewriteFastForward(t *testing.T) {
	g := newGitRepo(t)
	a := g.commit("config/deploy.yml", "service: a\n", "a")
	r := openRepo(t, t.TempDir(), g)
	first := syncRev(t, r, a)
	wantRewrite(t, first, "", "")
	b := g.commit("config/deploy.yml", "service: b\n", "b")
	wantRewrite(t, syncRev(t, r, b), a, "")
	// A merge is a fast-forward too.
	g.git("checkout", "-q", "-b", "side", a)
	g.commit("side.txt", "x", "side")
	g.git("checkout", "-q", "main")
	g.git("merge", "-q", "--no-ff", "-m", "merge", "side")
	wantRewrite(t, syncRev(t, r, g.git("rev-parse", "HEAD")), b, "")
}

func TestRepo_RewriteBack(t *testing.T) {
	g := newGitRepo(t)
	a := g.commit("config/deploy.yml", "service: a\n", "a")
	g.commit("config/deploy.yml", "service: b\n", "b")
	c := g.commit("config/deploy.yml", "service: c\n", "c")
	r := openRepo(t, t.TempDir(), g)
	syncRev(t, r, c)
	g.git("reset", "-q", "--hard", a)
	rev := syncRev(t, r, a)
	wantRewrite(t, rev, c, RewriteBack)
	if b, _ := os.ReadFile(filepath.Join(rev.Dir, "config/deploy.yml")); string(b) != "service: a\n" {
		t.Errorf("checkout after the move back holds %q", b)
	}
}

func TestRepo_RewriteAmended(t *testing.T) {
	g := newGitRepo(t)
	a := g.commit("config/deploy.yml", "service: a\n", "a")
	b := g.commit("config/deploy.yml", "service: b\n", "b")
	r := openRepo(t, t.TempDir(), g)
	syncRev(t, r, b)
	g.git("commit", "-q", "--amend", "-m", "b, amended")
	rev := syncRev(t, r, g.git("rev-parse", "HEAD"))
	wantRewrite(t, rev, b, RewriteDiverged)
	if !strings.Contains(rev.Rewritten, a[:7]) {
		t.Errorf("Rewritten %q does not name the common commit %s", rev.Rewritten, a[:7])
	}
}

func TestRepo_RewriteUnrelated(t *testing.T) {
	g := newGitRepo(t)
	g.commit("config/deploy.yml", "service: a\n", "a")
	b := g.commit("config/deploy.yml", "service: b\n", "b")
	r := openRepo(t, t.TempDir(), g)
	syncRev(t, r, b)
	g.git("checkout", "-q", "--orphan", "fresh")
	g.git("rm", "-rfq", ".")
	g.commit("config/deploy.yml", "service: z\n", "z")
	g.git("branch", "-M", "fresh", "main")
	wantRewrite(t, syncRev(t, r, g.git("rev-parse", "HEAD")), b, RewriteUnrelated)
}

// TestRepo_RewriteAfterRestart: a new Repo on the same cache directory,
// told the last SHA, compares with the checkout the old one left.
func TestRepo_RewriteAfterRestart(t *testing.T) {
	g := newGitRepo(t)
	g.commit("config/deploy.yml", "service: a\n", "a")
	b := g.commit("config/deploy.yml", "service: b\n", "b")
	cache := t.TempDir()
	syncRev(t, openRepo(t, cache, g), b)

	// Restarted on the same head: the cached checkout is reused.
	r := openRepo(t, cache, g)
	if err := r.SetLast(b); err != nil {
		t.Fatal(err)
	}
	rev := syncRev(t, r, b)
	wantRewrite(t, rev, "", "")
	if rev.Dir != filepath.Join(cache, b) {
		t.Errorf("Dir = %s, want the cached %s", rev.Dir, filepath.Join(cache, b))
	}

	// Restarted after an amend: diverged, which takes b's history from the
	// cache (without it, only "not in the new history" could be said).
	g.git("commit", "-q", "--amend", "-m", "b, amended")
	amended := g.git("rev-parse", "HEAD")
	r = openRepo(t, cache, g)
	if err := r.SetLast(b); err != nil {
		t.Fatal(err)
	}
	wantRewrite(t, syncRev(t, r, amended), b, RewriteDiverged)

	// Restarted with an empty cache: the new history is complete and
	// lacks the last SHA, so it was replaced.
	r = openRepo(t, t.TempDir(), g)
	if err := r.SetLast(b); err != nil {
		t.Fatal(err)
	}
	wantRewrite(t, syncRev(t, r, amended), b, RewriteReplaced)

	// Restarted after a fast-forward.
	c := g.commit("config/deploy.yml", "service: c\n", "c")
	r = openRepo(t, cache, g)
	if err := r.SetLast(amended); err != nil {
		t.Fatal(err)
	}
	wantRewrite(t, syncRev(t, r, c), amended, "")

	if err := r.SetLast("../../etc"); err == nil {
		t.Error("SetLast took a path for a SHA")
	}
}

// TestRepo_RewriteBeyondDepth: when the histories do not meet within
// HistoryDepth commits, Sync makes no claim.
func TestRepo_RewriteBeyondDepth(t *testing.T) {
	g := newGitRepo(t)
	a := g.commit("config/deploy.yml", "service: a\n", "a")
	cache := t.TempDir()
	r := openRepo(t, cache, g)
	syncRev(t, r, a)

	// A long fast-forward.
	long := g.commits(HistoryDepth+10, "ff")
	rev := syncRev(t, r, long)
	wantRewrite(t, rev, a, "")
	if _, err := os.Stat(filepath.Join(rev.Dir, ".git", "shallow")); err != nil {
		t.Fatalf("the checkout is not shallow, so the test proves nothing: %v", err)
	}

	// A long unrelated history: not told apart from a long fast-forward.
	g.git("checkout", "-q", "--orphan", "fresh")
	g.git("rm", "-rfq", ".")
	g.commit("z.txt", "z", "z")
	g.git("branch", "-M", "fresh", "main")
	other := g.commits(HistoryDepth+10, "other")
	wantRewrite(t, syncRev(t, r, other), long, "")
}

// BenchmarkRepo_CloneDepth compares the cost of a checkout of a config
// repository of 200 commits (30 files, one changed per commit) at depth 1,
// at HistoryDepth and in full.
func BenchmarkRepo_CloneDepth(b *testing.B) {
	g := newGitRepo(b)
	var s strings.Builder
	for i := 0; i < 200; i++ {
		msg := fmt.Sprintf("commit %d", i)
		fmt.Fprintf(&s, "commit refs/heads/main\ncommitter Ada <ada@example.com> %d +0000\ndata %d\n%s\n", 1700000000+i, len(msg), msg)
		for f := 0; f < 30; f++ {
			if i > 0 && f != i%30 {
				continue
			}
			c := strings.Repeat(fmt.Sprintf("key%d: value %d %d\n", f, f, i), 60)
			fmt.Fprintf(&s, "M 100644 inline config/file%02d.yml\ndata %d\n%s\n", f, len(c), c)
		}
	}
	g.fastImport(s.String())
	for _, depth := range []int{1, HistoryDepth, 0} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			r, err := Open(b.TempDir(), Source{URL: g.dir})
			if err != nil {
				b.Fatal(err)
			}
			var size int64
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(r.dir, fmt.Sprint(i))
				if _, err := r.clone(context.Background(), dir, r.ref(), depth); err != nil {
					b.Fatal(err)
				}
				size = dirSize(filepath.Join(dir, ".git"))
				os.RemoveAll(dir)
			}
			b.ReportMetric(float64(size), "git-bytes")
		})
	}
}
