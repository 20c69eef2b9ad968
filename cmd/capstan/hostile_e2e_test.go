package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostileValues are env values a deploy.yml may hold that a shell would
// act on if capstan ever let one interpret them.
var hostileValues = map[string]string{
	"H_SUBST":   "$(touch /root/pwned-subst) `touch /root/pwned-tick`",
	"H_CHAIN":   "x; touch /root/pwned-chain && echo y | cat > /root/pwned-pipe",
	"H_QUOTES":  `it's "quoted" \" \\ '\''`,
	"H_NEWLINE": "line one\nline two\r\n\ttabbed",
	"H_UNICODE": "ünïcødé \u202e ∑ 😀",
	"H_VARS":    "$HOME ${PATH} $PWD/bin ~root",
	"H_GLOB":    "* ? [a-z] ~ # !",
	"H_LONG":    strings.Repeat("$(touch /root/pwned-long);", 2400), // 62 KB
}

// TestE2EHostile_ValuesReachDockerVerbatim: env values and a label full of
// shell syntax, quotes, newlines, unicode and 62 KB go through `capstan
// apply` (SSH to a real sshd, dockerd) and come out of `docker inspect`
// byte for byte; no shell ran any of it (no marker file on any host).
func TestE2EHostile_ValuesReachDockerVerbatim(t *testing.T) {
	a := newE2EApp(t, 3)
	var env strings.Builder
	for k, v := range hostileValues {
		b, _ := json.Marshal(v) // a JSON string is a YAML double-quoted scalar
		fmt.Fprintf(&env, "    %s: %s\n", k, b)
	}
	label, _ := json.Marshal(hostileValues["H_CHAIN"])
	a.editConfig("    GREETING: hello\n", "    GREETING: hello\n"+env.String())
	a.editConfig("\nx-capstan:\n", "\nlabels:\n  hostile: "+string(label)+"\nx-capstan:\n")
	a.mustApply()
	expectServing(t, "v1", t.Fatalf, " with hostile values")

	for i := range a.l.Hosts {
		inspect := func(field string, v any) {
			t.Helper()
			out := a.sh(i, `docker inspect --format '{{json .Config.`+field+`}}' $(docker ps -q --filter label=service=testapp)`)
			if err := json.Unmarshal([]byte(strings.TrimSpace(out)), v); err != nil {
				t.Fatalf("host %d: %s: %v", i, field, err) // not the output: it holds the secret
			}
		}
		var got []string
		var labels map[string]string
		inspect("Env", &got)
		inspect("Labels", &labels)
		have := map[string]string{}
		for _, kv := range got {
			k, v, _ := strings.Cut(kv, "=")
			have[k] = v
		}
		for k, want := range hostileValues {
			if have[k] != want {
				t.Errorf("host %d: %s = %q (%d bytes), want %q (%d bytes)", i, k, trim(have[k]), len(have[k]), trim(want), len(want))
			}
		}
		if labels["hostile"] != hostileValues["H_CHAIN"] {
			t.Errorf("host %d: label hostile = %q", i, labels["hostile"])
		}
		if left := a.sh(i, "ls /root | grep pwned || true"); strings.TrimSpace(left) != "" {
			t.Errorf("host %d: a shell ran a value: %s", i, left)
		}
	}
}

func trim(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// TestE2EHostile_SymlinkOutOfTheRepository: a commit whose
// config/deploy.yml is a symbolic link to a file outside the checkout (a
// valid deploy.yml holding a marker), then one whose .kamal/secrets links
// to /etc/shadow. The daemon checks each out, refuses it as invalid naming
// the path, touches no host, and never reads the file: its marker is in no
// log, status or error.
func TestE2EHostile_SymlinkOutOfTheRepository(t *testing.T) {
	_, w, d, _ := truthLab(t, serveOpts{poll: "1s"})
	const marker = "marker-outside-the-checkout-7f3a"
	outside := filepath.Join(t.TempDir(), "deploy.yml")
	if err := os.WriteFile(outside, []byte(strings.Replace(deployYML(t, "v2"), "GREETING: hello", "GREETING: "+marker, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	link := func(name, target, msg string) string {
		t.Helper()
		p := filepath.Join(w.dir, name)
		_ = os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		w.git("add", "-A")
		w.git("commit", "-q", "-m", msg)
		w.git("push", "-q", "origin", "HEAD:"+w.git("rev-parse", "--abbrev-ref", "HEAD"))
		return w.git("rev-parse", "HEAD")
	}
	for _, c := range []struct{ name, target string }{
		{"config/deploy.yml", outside},
		{".kamal/secrets", "/etc/shadow"},
	} {
		sha := link(c.name, c.target, c.name+" links outside")
		waitFor(t, 30*time.Second, c.name+": refused", func() bool {
			st := d.status("testapp")
			return st["revision"] == sha && st["last_outcome"] == "invalid" && st["running"] == false
		})
		errText := fmt.Sprint(d.status("testapp")["last_error"])
		t.Logf("%s: %s", c.name, errText)
		if !strings.Contains(errText, c.name) {
			t.Errorf("%s: the error does not name the path: %s", c.name, errText)
		}
		if got := get(t, webAddrs[0]); !strings.HasPrefix(got, "v1 ") {
			t.Errorf("%s: a host changed: %q", c.name, got)
		}
		if strings.Contains(d.logs.String(), marker) || strings.Contains(errText, marker) {
			t.Errorf("%s: the file outside the checkout was read", c.name)
		}
		// Put the real file back for the next case.
		_ = os.Remove(filepath.Join(w.dir, c.name))
		w.commit(deployYML(t, "v1"), "restore "+c.name)
		d.waitIdle("succeeded", "noop")
	}
}
