package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TestCommitTime: the commit time ERB's Time.now answers is read from the
// repository (a real one, built with go-git).
func TestCommitTime(t *testing.T) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Add("a"); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	h, err := wt.Commit("c", &git.CommitOptions{Author: &object.Signature{Name: "a", Email: "a@example.org", When: when}})
	if err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "config")
	_ = os.MkdirAll(sub, 0o755)
	rev, err := gitRevision(sub)
	if err != nil || rev != h.String() {
		t.Fatalf("gitRevision = %q, %v; want %s", rev, err, h)
	}
	if got := commitTime(sub, rev); !got.Equal(when) {
		t.Errorf("commitTime = %v, want %v", got, when)
	}
	if got := commitTime(t.TempDir(), rev); !got.IsZero() {
		t.Errorf("commitTime outside a repository = %v, want zero", got)
	}
	// capstan config renders ERB with the revision and its time, also
	// when --version sets the version.
	files := map[string]string{
		"config/deploy.yml": "service: s\nimage: o/s\nregistry:\n  username: u\n  password: p\nbuilder:\n  arch: amd64\nservers:\n  - 192.0.2.1\n" +
			"env:\n  clear:\n    REV: <%= `git rev-parse --short HEAD`.strip %>\n    AT: \"<%= Time.now.to_i %>\"\n",
	}
	for name, content := range files {
		_ = os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runIn(t, dir, nil, "config", "--version", "v1")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{h.String()[:7], "1714979289"} {
		if !strings.Contains(out, want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}
}

// TestEnvLookup: a variable set to "" is a value for ERB's ENV.
func TestEnvLookup(t *testing.T) {
	e := &env{lookupEnv: func(k string) (string, bool) { return "", k == "EMPTY" }}
	if v, ok := e.lookup("EMPTY"); !ok || v != "" {
		t.Errorf("lookup(EMPTY) = %q, %v", v, ok)
	}
	if _, ok := e.lookup("UNSET"); ok {
		t.Error("lookup(UNSET) found")
	}
	e = &env{getenv: func(string) string { return "" }}
	if _, ok := e.lookup("X"); ok {
		t.Error("without lookupEnv, \"\" from getenv should read as unset")
	}
}
