package verify

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// rangeFixture is a repo whose commits are signed by a trusted SSH key.
type rangeFixture struct {
	*testRepo
	v   *Verifier
	key sshKey
}

func newRangeFixture(t *testing.T) rangeFixture {
	r := newTestRepo(t)
	key := newSSHKey(t, "ed25519", 0)
	v := mustNew(t, Policy{AllowedSigners: writeFile(t, filepath.Join(t.TempDir(), "as"), "ada@example.org "+key.pub+"\n")})
	return rangeFixture{r, v, key}
}

func (f rangeFixture) signed(msg string) plumbing.Hash { return f.commitSSH(msg, f.key.file) }

// summary is "sha:trusted-or-reason" per result, for comparisons.
func summary(rs []Result) []string {
	var out []string
	for _, r := range rs {
		v := "trusted"
		if !r.Trusted {
			v = r.Reason
		}
		out = append(out, r.Commit[:7]+":"+v)
	}
	return out
}

func TestCheckRange_UnsignedInMiddle(t *testing.T) {
	f := newRangeFixture(t)
	f.commit("root, unsigned: before base, never reported")
	base := f.signed("base")
	s1 := f.signed("one")
	u := f.commit("unsigned")
	head := f.signed("two")
	got, err := f.v.CheckRange(f.open(), base, head, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{head.String()[:7] + ":trusted", u.String()[:7] + ":unsigned", s1.String()[:7] + ":trusted"}
	if !slices.Equal(summary(got), want) {
		t.Fatalf("CheckRange = %v, want %v", summary(got), want)
	}
	// A zero base checks head only.
	if got, err := f.v.CheckRange(f.open(), plumbing.ZeroHash, u, 10); err != nil || len(got) != 1 || got[0].Reason != "unsigned" {
		t.Fatalf("zero base: %v, %v", summary(got), err)
	}
	// base == head: nothing to check.
	if got, err := f.v.CheckRange(f.open(), head, head, 10); err != nil || len(got) != 0 {
		t.Fatalf("base == head: %v, %v", summary(got), err)
	}
}

func TestCheckRange_Limit(t *testing.T) {
	f := newRangeFixture(t)
	base := f.signed("base")
	var head plumbing.Hash
	for range 3 {
		head = f.signed("next")
	}
	if got, err := f.v.CheckRange(f.open(), base, head, 3); err != nil || len(got) != 3 {
		t.Fatalf("max 3 with 3 commits: %v, %v", summary(got), err)
	}
	got, err := f.v.CheckRange(f.open(), base, head, 2)
	if !errors.Is(err, ErrTooManyCommits) || !strings.Contains(err.Error(), "more than 2 commits") || got != nil {
		t.Fatalf("max 2 with 3 commits: %v, %v; want ErrTooManyCommits naming 2", summary(got), err)
	}
}

func TestCheckRange_Merges(t *testing.T) {
	f := newRangeFixture(t)
	old := f.signed("old")
	f.git("branch", "side", old.String())
	base := f.signed("base")
	m1 := f.signed("main work")
	f.git("checkout", "-q", "side")
	f.file = "side.txt"
	x := f.commit("side work, unsigned, forked before base")
	f.git("checkout", "-q", "main")
	f.git("-c", "gpg.format=ssh", "-c", "user.signingkey="+f.key.file, "merge", "-q", "-S", "--no-ff", "-m", "merge side", "side")
	head := plumbing.NewHash(f.git("rev-parse", "HEAD"))
	// max 3 exactly: commits reachable from base do not count.
	got, err := f.v.CheckRange(f.open(), base, head, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{head.String()[:7] + ":trusted", x.String()[:7] + ":unsigned", m1.String()[:7] + ":trusted"}
	if !slices.Equal(summary(got), want) {
		t.Fatalf("CheckRange = %v, want %v (old %s and base left out)", summary(got), want, old.String()[:7])
	}
}

func TestCheckRange_BaseNotFound(t *testing.T) {
	f := newRangeFixture(t)
	a := f.signed("a")
	b := f.signed("b")
	f.git("checkout", "-q", "-b", "other", a.String())
	other := f.signed("other line")
	f.git("checkout", "-q", "main")
	c := f.signed("c")
	d := f.signed("d")
	for _, tc := range []struct {
		name       string
		base, head plumbing.Hash
	}{
		{"unknown base", plumbing.NewHash("1111111111111111111111111111111111111111"), d},
		{"base on another line", other, d},
		{"base after head", d, b},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.v.CheckRange(f.open(), tc.base, tc.head, 10)
			if !errors.Is(err, ErrBaseNotFound) || got != nil {
				t.Fatalf("CheckRange = %v, %v; want ErrBaseNotFound", summary(got), err)
			}
		})
	}
	// A shallow clone of depth 2 has d and c; b is beyond it.
	shallow := t.TempDir()
	f.git("clone", "-q", "--depth", "2", "--branch", "main", "file://"+f.dir, shallow)
	repo, err := git.PlainOpen(shallow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.CheckRange(repo, b, d, 10); !errors.Is(err, ErrBaseNotFound) || !strings.Contains(err.Error(), "not in the fetched history") {
		t.Fatalf("base beyond the shallow boundary: %v", err)
	}
	if got, err := f.v.CheckRange(repo, c, d, 10); err != nil || len(got) != 1 || !got[0].Trusted {
		t.Fatalf("base inside the shallow clone: %v, %v", summary(got), err)
	}
}

func TestCheckRange_ShallowBoundaryOnHeadSide(t *testing.T) {
	f := newRangeFixture(t)
	a := f.signed("a")
	base := f.signed("base")
	f.git("checkout", "-q", "-b", "side", a.String())
	f.file = "side.txt"
	for range 4 {
		f.signed("side")
	}
	f.git("checkout", "-q", "main")
	f.git("-c", "gpg.format=ssh", "-c", "user.signingkey="+f.key.file, "merge", "-q", "-S", "--no-ff", "-m", "merge side", "side")
	head := plumbing.NewHash(f.git("rev-parse", "HEAD"))
	if got, err := f.v.CheckRange(f.open(), base, head, 10); err != nil || len(got) != 5 {
		t.Fatalf("full clone: %v, %v; want the merge and 4 side commits", summary(got), err)
	}
	// Depth 3 keeps base and a, but only the last two side commits: the
	// two before them are unchecked, so the range cannot be proven.
	shallow := t.TempDir()
	f.git("clone", "-q", "--depth", "3", "--branch", "main", "file://"+f.dir, shallow)
	repo, err := git.PlainOpen(shallow)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.v.CheckRange(repo, base, head, 10); !errors.Is(err, ErrBaseNotFound) || !strings.Contains(err.Error(), "shallow boundary") {
		t.Fatalf("shallow clone: %v, %v; want ErrBaseNotFound at the shallow boundary", summary(got), err)
	}
}
