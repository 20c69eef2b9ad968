package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := []struct {
		spec string
		want map[string]action
	}{
		{"", nil},
		{"  ", nil},
		{"apply/after-pull=kill", map[string]action{"apply/after-pull": {kill: true}}},
		{" a=kill ; b=sleep(250);", map[string]action{"a": {kill: true}, "b": {sleep: 250 * time.Millisecond}}},
	}
	for _, c := range good {
		got, err := parse(c.spec)
		if err != nil {
			t.Errorf("parse(%q): %v", c.spec, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("parse(%q) = %v, want %v", c.spec, got, c.want)
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("parse(%q)[%s] = %+v, want %+v", c.spec, k, got[k], v)
			}
		}
	}
	for _, bad := range []string{"a", "=kill", "a=", "a=panic", "a=sleep(", "a=sleep(x)", "a=sleep(0)", "a=sleep(-5)", "a=kill;b"} {
		if got, err := parse(bad); !errors.Is(err, ErrSpec) || got != nil {
			t.Errorf("parse(%q) = %v, %v; want ErrSpec and nothing armed", bad, got, err)
		}
	}
}

// arm replaces the armed points for one test.
func arm(t *testing.T, spec string) {
	t.Helper()
	a, err := parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	old := armed
	armed = a
	t.Cleanup(func() { armed = old })
}

func TestHit_OnlyTheArmedPoint(t *testing.T) {
	kills := 0
	old := killSelf
	killSelf = func() { kills++ }
	t.Cleanup(func() { killSelf = old })

	arm(t, "")
	Hit("apply/after-pull")
	arm(t, "apply/after-pull=kill;slow=sleep(50)")
	Hit("apply/after-create")
	if kills != 0 {
		t.Fatalf("%d kills at points not armed", kills)
	}
	Hit("apply/after-pull")
	if kills != 1 {
		t.Fatalf("%d kills at the armed point, want 1", kills)
	}
	start := time.Now()
	Hit("slow")
	if took := time.Since(start); took < 50*time.Millisecond || kills != 1 {
		t.Errorf("sleep(50) took %s and killed %d times", took, kills)
	}
	if names, err := Check(); err != nil || len(names) != 2 || names[0] != "apply/after-pull" || names[1] != "slow" {
		t.Errorf("Check() = %v, %v", names, err)
	}
}

// TestHit_KillsTheProcess runs this test binary again with a point armed:
// the child must die of SIGKILL at Hit, before it can exit by itself.
func TestHit_KillsTheProcess(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit("child/point")
		os.Exit(0) // reached only when Hit did not kill
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHit_KillsTheProcess$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", EnvVar+"=child/point=kill")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the child was not killed: %v", err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, want SIGKILL", ee)
	}
}
