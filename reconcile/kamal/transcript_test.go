package kamal

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

var (
	reHostnameHex = regexp.MustCompile(`(--hostname \S+)-[0-9a-f]{12}`)
	reTargetID    = regexp.MustCompile(`--target="[^":]+:`)
	reFingerprint = regexp.MustCompile(` --label capstan\.fingerprint="[0-9a-f]{8}\.[0-9a-f]{64}"`)
)

// normalize removes what legitimately differs between a Kamal run and a
// capstan plan: the random hostname suffix, the container id given to the
// proxy, and capstan's own fingerprint label.
func normalize(s string) string {
	s = reHostnameHex.ReplaceAllString(s, "$1-HEX")
	s = reTargetID.ReplaceAllString(s, `--target="ID:`)
	return reFingerprint.ReplaceAllString(s, "")
}

// TestPlan_MatchesKamalTranscript checks the rendered proxy boot, docker
// run and kamal-proxy deploy lines against the exact commands real Kamal
// 2.11 ran for the same configuration (docs/kamal-transcript.md, copied to
// testdata/transcript).
func TestPlan_MatchesKamalTranscript(t *testing.T) {
	c, err := loadCase(t, "testdata/corpus/valid-transcript")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/transcript/kamal-2.11-setup.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		host, cmd, ok := strings.Cut(sc.Text(), "  $ ")
		if !ok {
			t.Fatalf("bad transcript line %q", sc.Text())
		}
		p, err := c.Plan(host)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := WriteScript(&b, []*HostPlan{p}); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(b.String(), "\n") {
			if normalize(line) == normalize(cmd) {
				found = true
			}
		}
		if !found {
			t.Errorf("host %s: Kamal ran\n  %s\nbut the plan has no such line:\n%s", host, cmd, b.String())
		}
		n++
	}
	if n < 7 {
		t.Fatalf("only %d transcript lines checked", n)
	}
}

// TestPlan_Argv checks the argv (not the display line) of the transcript's
// web container: quotes are shell syntax, never part of an argument.
func TestPlan_Argv(t *testing.T) {
	c, err := loadCase(t, "testdata/corpus/valid-transcript")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("10.231.0.11")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Apps) != 1 {
		t.Fatalf("want 1 app container, got %d", len(p.Apps))
	}
	ct := p.Apps[0]
	argv := ct.Run.Argv
	want := []string{"docker", "run", "--detach", "--restart", "unless-stopped", "--name", "testapp-web-v1", "--network", "kamal", "--hostname"}
	if strings.Join(argv[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("argv starts %q", argv[:len(want)])
	}
	joined := "\x00" + strings.Join(argv, "\x00") + "\x00"
	for _, w := range []string{"KAMAL_VERSION=v1", "service=testapp", "destination", "max-size=10m", "10.231.0.1:5000/testapp:v1", FingerprintLabel + "=" + ct.Fingerprint} {
		if !strings.Contains(joined, "\x00"+w+"\x00") {
			t.Errorf("argv lacks %q: %q", w, argv)
		}
	}
	if strings.Contains(joined, `"`) {
		t.Errorf("argv contains shell quotes: %q", argv)
	}
	if ct.EnvFile.Path != ".kamal/apps/testapp/env/roles/web.env" || ct.EnvFile.Mode != 0o600 || ct.EnvFile.Content.Reveal() != "\n" {
		t.Errorf("env file = %+v %q", ct.EnvFile, ct.EnvFile.Content.Reveal())
	}
	pd := ct.Proxy.Command("ba1be7e292ff").Argv
	if got := strings.Join(pd[:7], " "); got != "docker exec kamal-proxy kamal-proxy deploy testapp-web --target=ba1be7e292ff:3000" {
		t.Errorf("proxy deploy argv = %q", pd)
	}
}
