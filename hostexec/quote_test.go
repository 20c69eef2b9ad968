package hostexec

import (
	"bytes"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// printArgs is the remote side of every quoting test: it prints each
// argument followed by a NUL byte.
var printArgs = []string{"printf", `%s\000`}

// splitNUL undoes printArgs.
func splitNUL(out []byte) []string {
	if len(out) == 0 {
		return nil
	}
	parts := strings.Split(string(out), "\x00")
	return parts[:len(parts)-1] // trailing terminator
}

// shells lists the local POSIX shells to check Quote against: /bin/sh and,
// if installed, bash (the usual login shell of root on a host).
func shells(t testing.TB) []string {
	var out []string
	for _, sh := range []string{"/bin/sh", "/bin/bash"} {
		if _, err := exec.LookPath(sh); err == nil {
			out = append(out, sh)
		}
	}
	if len(out) == 0 {
		t.Fatal("no /bin/sh")
	}
	return out
}

// roundTripLocal runs Quote(printArgs+args) through sh -c and returns the
// arguments the shell passed to printf.
func roundTripLocal(t testing.TB, sh string, args []string) []string {
	t.Helper()
	cmd := exec.Command(sh, "-c", Quote(append(slices.Clone(printArgs), args...)))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LC_ALL=C.UTF-8"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c %q: %v: %s", sh, Quote(args), err, stderr.Bytes())
	}
	return splitNUL(out)
}

// trickyArgs are the cases the issue names, plus some more.
var trickyArgs = []string{
	"", "plain", "two words", "'", "''", `"`, `\`, `\'`, `'\''`, "$HOME", "${HOME}", "$(id)", "`id`",
	"a;b", "a && b", "a|b", "x\ny", "\n", "\t", "*", "?", "[a-z]*", "~", "~root", "a=b", "-n", "--", "-e",
	"!", "#comment", "%s", `\000`, "\xff\xfe", "caf\xc3\xa9", "\xe2\x80\x8b", "{a,b}", "a>b", "<", "&",
	"\x01\x7f", " leading", "trailing ", strings.Repeat("x'y", 100),
}

func TestQuote_Golden(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"docker", "ps", "-a"}, "docker ps -a"},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"A=1", "~"}, "'A=1' '~'"},
		{[]string{"a b", "$x"}, "'a b' '$x'"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := Quote(tt.argv); got != tt.want {
			t.Errorf("Quote(%q) = %q, want %q", tt.argv, got, tt.want)
		}
	}
}

func TestQuote_TrickyArgsThroughLocalShell(t *testing.T) {
	for _, sh := range shells(t) {
		got := roundTripLocal(t, sh, trickyArgs)
		if !slices.Equal(got, trickyArgs) {
			t.Errorf("%s: argv changed:\n got %q\nwant %q", sh, got, trickyArgs)
		}
	}
}

func TestQuote_FirstWordIsNeverAnAssignment(t *testing.T) {
	for _, sh := range shells(t) {
		err := exec.Command(sh, "-c", Quote([]string{"CAPSTAN_QUOTE_TEST=1"})).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 127 {
			t.Errorf("%s: quoted assignment-like word must run as a command (exit 127), got %v", sh, err)
		}
	}
}

// fuzzArgv turns fuzz input into argv: NUL separates arguments (NUL cannot
// occur inside one).
func fuzzArgv(raw string) []string { return strings.Split(raw, "\x00") }

func FuzzQuote(f *testing.F) {
	f.Add(strings.Join(trickyArgs, "\x00"))
	f.Add("")
	f.Add("a\x00\x00b")
	f.Add("'\x00\"\x00$(echo pwned)\x00`id`;ls\x00*\n?")
	f.Add("\xff\x00\xc3\x28\x00\xed\xa0\x80")
	sh := shells(f)
	f.Fuzz(func(t *testing.T, raw string) {
		args := fuzzArgv(raw)
		for _, s := range sh {
			if got := roundTripLocal(t, s, args); !slices.Equal(got, args) {
				t.Fatalf("%s: argv changed:\n got %q\nwant %q\ncommand %q", s, got, args, Quote(args))
			}
		}
	})
}
