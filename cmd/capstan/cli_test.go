package main

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

func TestRun_Version(t *testing.T) {
	out, _, code := runCLI(t, "version")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"capstan ", "commit ", runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("version output %q lacks %q", out, want)
		}
	}
}

func TestRun_HelpListsCommands(t *testing.T) {
	out, _, code := runCLI(t, "help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for name := range commands {
		if !strings.Contains(out, "  "+name+" ") {
			t.Errorf("help does not list %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "-log-format") {
		t.Errorf("help lacks the global flags:\n%s", out)
	}
}

func TestRun_UsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"no-such-command"}, {"--log-level", "loud", "version"}, {"--log-format", "xml", "version"}, {"version", "--bogus"}} {
		_, errOut, code := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (stderr %q)", args, code, exitUsage, errOut)
		}
	}
}

func TestNewLogger_JSONWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	l, _, err := newLogger(&buf, "auto", "debug")
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hello", "host", "lab1")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("auto format to a buffer is not JSON: %q", buf.String())
	}
	if m["msg"] != "hello" || m["host"] != "lab1" {
		t.Errorf("log line %v", m)
	}
	buf.Reset()
	l, _, _ = newLogger(&buf, "text", "warn")
	l.Info("dropped")
	l.Warn("kept")
	if s := buf.String(); strings.Contains(s, "dropped") || !strings.Contains(s, "kept") || strings.HasPrefix(s, "{") {
		t.Errorf("text logger at warn wrote %q", s)
	}
}
