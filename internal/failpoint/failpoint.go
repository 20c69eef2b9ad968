// Package failpoint lets a test make capstan fail at a named point of its
// work, the way etcd's gofail does, in a few lines: code calls Hit(name) at
// the point, and Hit does nothing unless the environment variable
// CAPSTAN_FAILPOINTS arms that name when the process starts.
//
// CAPSTAN_FAILPOINTS is for tests only; operators must not set it. Its
// value is a list of name=action separated by ';', for example
//
//	CAPSTAN_FAILPOINTS='apply/after-create=kill;apply/after-pull=sleep(500)'
//
// Actions: kill sends SIGKILL to the process itself (a crash at that point,
// no deferred code runs); sleep(N) pauses N milliseconds. The variable is
// read once, when the package is initialized: with it unset Hit costs one
// length check.
//
// The named points are declared where they are hit (reconcile names its
// own: "apply/after-pull", …), so the package stays a leaf.
package failpoint

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvVar is the environment variable that arms failpoints.
const EnvVar = "CAPSTAN_FAILPOINTS"

// ErrSpec is wrapped by the error Check returns for a malformed
// CAPSTAN_FAILPOINTS.
var ErrSpec = errors.New("malformed " + EnvVar)

// action is what an armed point does.
type action struct {
	kill  bool
	sleep time.Duration
}

// armed holds the points CAPSTAN_FAILPOINTS armed at start; specErr is why
// it was refused, if it was (then nothing is armed).
var armed, specErr = parse(os.Getenv(EnvVar))

// killSelf is the kill action (a test replaces it).
var killSelf = func() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill()
	}
	select {} // the signal is on its way; never return into the failed point
}

// Hit runs the action armed for name, if any: with kill it does not return.
func Hit(name string) {
	if len(armed) == 0 {
		return
	}
	a, ok := armed[name]
	if !ok {
		return
	}
	if a.sleep > 0 {
		time.Sleep(a.sleep)
	}
	if a.kill {
		killSelf()
	}
}

// Check returns the armed point names, sorted (none when the variable is
// unset), or an error wrapping ErrSpec when the variable is malformed (then
// nothing is armed). The process should log the names loudly, and refuse
// to start on the error.
func Check() ([]string, error) {
	if specErr != nil {
		return nil, specErr
	}
	names := make([]string, 0, len(armed))
	for n := range armed {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// parse reads a CAPSTAN_FAILPOINTS value; nil for "".
func parse(spec string) (map[string]action, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	out := map[string]action{}
	for _, item := range strings.Split(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, act, ok := strings.Cut(item, "=")
		name, act = strings.TrimSpace(name), strings.TrimSpace(act)
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: %q: want name=action", ErrSpec, item)
		}
		a, err := parseAction(act)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrSpec, name, err)
		}
		out[name] = a
	}
	return out, nil
}

// parseAction reads "kill" or "sleep(N)" (N milliseconds).
func parseAction(s string) (action, error) {
	if s == "kill" {
		return action{kill: true}, nil
	}
	if arg, ok := strings.CutPrefix(s, "sleep("); ok {
		if ms, ok := strings.CutSuffix(arg, ")"); ok {
			n, err := strconv.Atoi(ms)
			if err == nil && n > 0 {
				return action{sleep: time.Duration(n) * time.Millisecond}, nil
			}
		}
	}
	return action{}, fmt.Errorf("unknown action %q (kill or sleep(N) with N milliseconds)", s)
}
