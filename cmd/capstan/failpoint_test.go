package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/internal/failpoint"
)

// TestRun_Failpoints runs this test binary again as capstan with
// CAPSTAN_FAILPOINTS set (it is read when the process starts): armed
// points are warned about and the command runs; a malformed value is a
// usage error.
func TestRun_Failpoints(t *testing.T) {
	if os.Getenv("CAPSTAN_TEST_CLI_CHILD") == "1" {
		os.Exit(exitCode(run(context.Background(), []string{"--log-format", "text", "version"}, os.Stdout, os.Stderr), os.Stderr))
	}
	child := func(spec string) (string, int) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRun_Failpoints$")
		cmd.Env = append(os.Environ(), "CAPSTAN_TEST_CLI_CHILD=1", failpoint.EnvVar+"="+spec)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := child("apply/after-pull=kill")
	if code != exitOK || !strings.Contains(out, failpoint.EnvVar+" is set") || !strings.Contains(out, "apply/after-pull") || !strings.Contains(out, "capstan ") {
		t.Errorf("armed: exit %d:\n%s\nwant the version and a warning naming the point", code, out)
	}
	out, code = child("apply/after-pull=explode")
	if code != exitUsage || !strings.Contains(out, "malformed "+failpoint.EnvVar) {
		t.Errorf("malformed: exit %d:\n%s\nwant exit %d naming the variable", code, out, exitUsage)
	}
	if out, code = child(""); code != exitOK || strings.Contains(out, failpoint.EnvVar) {
		t.Errorf("unset: exit %d:\n%s", code, out)
	}
}
