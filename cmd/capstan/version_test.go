package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBuildVersion(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	stamped := &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261129185946-d389919abcde+dirty"},
		Settings: vcs("vcs", "git", "vcs.revision", "d389919abcdef0123456789abcdef0123456789a", "vcs.time", "2026-11-29T18:59:46Z", "vcs.modified", "true")}
	for _, c := range []struct {
		name             string
		ldVersion, ldCmt string
		bi               *debug.BuildInfo
		want             build
		wantCommitLine   string
	}{
		{"no build info", "dev", "", nil, build{Version: "dev", Commit: "unknown"}, "commit unknown\n"},
		{"go build in a work tree", "dev", "", stamped,
			build{Version: "v0.0.0-20261129185946-d389919abcde+dirty", Commit: "d389919abcdef0123456789abcdef0123456789a", Time: "2026-11-29T18:59:46Z", Modified: true},
			"commit d389919abcdef0123456789abcdef0123456789a-dirty (2026-11-29T18:59:46Z)\n"},
		{"ldflags win", "v1.2.3", "abc123", stamped,
			build{Version: "v1.2.3", Commit: "abc123", Time: "2026-11-29T18:59:46Z", Modified: true}, "commit abc123-dirty (2026-11-29T18:59:46Z)\n"},
		{"devel module, clean tree", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("vcs.revision", "abc", "vcs.modified", "false")},
			build{Version: "dev", Commit: "abc"}, "commit abc\n"},
		{"go install module@version, no vcs", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}},
			build{Version: "v0.4.0", Commit: "unknown"}, "commit unknown\n"},
	} {
		got := buildVersion(c.ldVersion, c.ldCmt, c.bi)
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		var out strings.Builder
		got.write(&out)
		if want := "capstan " + c.want.Version + "\n" + c.wantCommitLine + runtime.Version(); !strings.HasPrefix(out.String(), want) {
			t.Errorf("%s: printed %q, want prefix %q", c.name, out.String(), want)
		}
	}
}

// TestVersion_BinaryReportsItsCommit clones this repository's HEAD, builds
// capstan from the clone without -ldflags, and checks that version reports
// what the Go toolchain embedded: HEAD's revision and time, whether the tree
// had uncommitted changes, and a pseudo-version. (A clone, because the toolchain stamps nothing in a git
// worktree, and with GOFLAGS=-buildvcs=false.)
func TestVersion_BinaryReportsItsCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("clones the repository and builds the binary")
	}
	run := func(dir string, env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	src := t.TempDir()
	run(".", nil, "git", "clone", "-q", "--no-hardlinks", "../..", src)
	// The work tree's uncommitted changes go into the clone too, so the
	// code under test is this tree's and the build is "modified".
	changed := strings.Fields(run("../..", nil, "git", "ls-files", "--modified", "--others", "--exclude-standard"))
	for _, f := range changed {
		b, err := os.ReadFile(filepath.Join("../..", f))
		if os.IsNotExist(err) {
			err = os.Remove(filepath.Join(src, f))
		} else if err == nil {
			err = os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755)
			if err == nil {
				err = os.WriteFile(filepath.Join(src, f), b, 0o644)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	head := run(src, nil, "git", "rev-parse", "HEAD")
	ct, err := strconv.ParseInt(run(src, nil, "git", "show", "-s", "--format=%ct", "HEAD"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "capstan")
	run(src, []string{"GOFLAGS=-buildvcs=true"}, "go", "build", "-o", bin, "./cmd/capstan")
	out := run(src, nil, bin, "version")
	want := "commit " + head
	if len(changed) > 0 {
		want += "-dirty"
	}
	want += " (" + time.Unix(ct, 0).UTC().Format(time.RFC3339) + ")"
	if !strings.Contains(out, want+"\n") {
		t.Errorf("capstan version:\n%s\nwant the line %q", out, want)
	}
	if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "capstan v") || !strings.Contains(first, head[:12]) {
		t.Errorf("version line %q, want the pseudo-version of %s", first, head[:12])
	}
}
