package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// shellHosts runs every command with the real /bin/sh, each host with its
// own state directory (dir/HOST) and a fake docker and df on PATH that keep
// images as files there: images/KEY holds the inspect line of an image,
// used/KEY the containers created from it, root the Docker data root,
// free its free KiB, label and digest what a pull gets, pullfail makes a
// pull fail with its text. docker.log gets every docker argv, login.stdin
// what a login read. A host in down is unreachable.
type shellHosts struct {
	t    *testing.T
	dir  string
	bin  string
	down map[string]bool

	mu   sync.Mutex
	runs []string // "host: argv"
}

const fakeDockerScript = `#!/bin/sh
st=$STATE
echo "$*" >> "$st/docker.log"
key() { printf '%s' "$1" | tr '/:@' '___'; }
case $1 in
image)
  case $2 in
  inspect) eval "ref=\${$#}"; f=$st/images/$(key "$ref"); [ -f "$f" ] || { echo "Error: No such image: $ref" >&2; exit 1; }; cat "$f" ;;
  rm) f=$st/images/$(key "$3"); [ -f "$f" ] || exit 1; rm "$f" ;;
  esac ;;
info) cat "$st/root" ;;
ps) eval "f=\${$#}"; cat "$st/used/$(key "${f#ancestor=}")" 2>/dev/null; exit 0 ;;
login) cat > "$st/login.stdin" ;;
create) echo c0ffee ;;
rm) [ "$2" = c0ffee ] || exit 1 ;;
pull)
  [ -f "$st/pullfail" ] && { cat "$st/pullfail" >&2; exit 1; }
  ref=$3
  printf '["%s@%s"]|%s\n' "${ref%:*}" "$(cat "$st/digest" 2>/dev/null || echo sha256:d1)" "$(cat "$st/label" 2>/dev/null || echo testapp)" > "$st/images/$(key "$ref")" ;;
esac
`

const fakeDf = `#!/bin/sh
echo "Filesystem     1024-blocks      Used Available Capacity Mounted on"
echo "/dev/vda1        100000000  50000000 $(cat "$STATE/free") 50% $2"
`

func newShellHosts(t *testing.T, hosts ...string) *shellHosts {
	t.Helper()
	dir := t.TempDir()
	h := &shellHosts{t: t, dir: dir, bin: filepath.Join(dir, "bin"), down: map[string]bool{}}
	h.write("bin/docker", fakeDockerScript)
	h.write("bin/df", fakeDf)
	for _, name := range []string{"docker", "df"} {
		if err := os.Chmod(filepath.Join(h.bin, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, host := range hosts {
		h.write(host+"/root", "/var/lib/docker\n")
		h.write(host+"/free", strconv.Itoa(50<<20)) // 50 GiB
		h.write(host+"/docker.log", "")
		if err := os.MkdirAll(filepath.Join(dir, host, "images"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *shellHosts) write(name, content string) {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *shellHosts) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(h.dir, name))
	return string(b)
}

// imageKey is the fake docker's file name of an image reference.
func imageKey(ref string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(ref)
}

// hasImage reports whether host holds ref.
func (h *shellHosts) hasImage(host, ref string) bool {
	_, err := os.Stat(filepath.Join(h.dir, host, "images", imageKey(ref)))
	return err == nil
}

// docker returns the docker commands host ran, one per line.
func (h *shellHosts) docker(host string) []string {
	return strings.Split(strings.TrimSpace(h.read(host+"/docker.log")), "\n")
}

func (h *shellHosts) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	h.mu.Lock()
	h.runs = append(h.runs, host+": "+strings.Join(argv, " "))
	h.mu.Unlock()
	if h.down[host] {
		return nil, errors.New("dial tcp " + host + ":22: connect: no route to host")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = filepath.Join(h.dir, host)
	cmd.Env = append(os.Environ(), "PATH="+h.bin+":"+os.Getenv("PATH"), "STATE="+filepath.Join(h.dir, host))
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// As hostexec's: the error names the host and the stderr.
		return out, &ExitError{Host: host, Code: cmd.ProcessState.ExitCode(), Stderr: stderr.String(),
			Err: fmt.Errorf("%s: %w: %s", host, err, strings.TrimSpace(stderr.String()))}
	}
	return out, nil
}

func (h *shellHosts) Upload(context.Context, string, string, fs.FileMode, []byte) error {
	return errors.New("no uploads in a pre-pull")
}

func (h *shellHosts) Dial(context.Context, string, string, string) (net.Conn, error) {
	return nil, errors.New("no Docker API in this test")
}

// prepullApp is testApp at version with an accessory on 10.0.0.9, its
// hosts given by a shellHosts.
func prepullApp(t *testing.T, version string) (*App, *shellHosts) {
	t.Helper()
	fsys := fstest.MapFS{
		"config/deploy.yml": {Data: []byte(testDeploy + "accessories:\n  db:\n    image: postgres:16\n    host: 10.0.0.9\n")},
		".kamal/secrets":    {Data: []byte("REGISTRY_PASSWORD=pw\nSECRET_KEY=s3cret-value\n")},
	}
	cfg, err := kamal.Load(fsys, kamal.LoadOptions{Version: version, FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	plans, err := cfg.Plans()
	if err != nil {
		t.Fatal(err)
	}
	h := newShellHosts(t, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9")
	return &App{Config: cfg, Hosts: plans, SSH: h, ProxyContainer: "kamal-proxy"}, h
}

func outcomes(res []PrepullHost) map[string]string {
	m := map[string]string{}
	for _, r := range res {
		m[r.Host] = r.Outcome
	}
	return m
}

// TestPrepull_PullsOnRoleHostsOnly: the image of v2 is pulled on the three
// role hosts, not on the accessory's; the password reaches docker login on
// stdin and no command line; no audit line, lock or container command.
func TestPrepull_PullsOnRoleHostsOnly(t *testing.T) {
	a, h := prepullApp(t, "v1")
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"10.0.0.1": PrepullPulled, "10.0.0.2": PrepullPulled, "10.0.0.3": PrepullPulled}
	if got := outcomes(res); len(got) != 3 || got["10.0.0.1"] != want["10.0.0.1"] || got["10.0.0.2"] != want["10.0.0.2"] || got["10.0.0.3"] != want["10.0.0.3"] {
		t.Fatalf("outcomes = %v, want %v", got, want)
	}
	ref := a.Config.Repository + ":v2"
	for _, host := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if !h.hasImage(host, ref) {
			t.Errorf("%s lacks %s", host, ref)
		}
		if got := h.read(host + "/login.stdin"); got != "pw" {
			t.Errorf("%s: docker login read %q on stdin, want the password", host, got)
		}
	}
	if h.read("10.0.0.9/docker.log") != "" {
		t.Errorf("the accessory-only host ran docker: %q", h.read("10.0.0.9/docker.log"))
	}
	for _, run := range h.runs {
		if strings.Contains(run, "pw ") || strings.HasSuffix(run, "pw") || strings.Contains(run, "audit") || strings.Contains(run, "lock") {
			t.Errorf("a pre-pull ran %q", run)
		}
	}
	// The image is readied by a container created and removed at once
	// (never started, never the app's: no service label).
	lines := h.docker("10.0.0.1")
	for i, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "create":
			if line != "create --entrypoint /capstan-warm --label capstan.warm=1 "+ref || i+1 >= len(lines) || lines[i+1] != "rm c0ffee" {
				t.Errorf("a pre-pull ran docker %s, then %q", line, lines[min(i+1, len(lines)-1)])
			}
		case len(f) > 0 && !slices.Contains([]string{"image", "info", "login", "pull", "rm"}, f[0]):
			t.Errorf("a pre-pull ran docker %s", line)
		}
	}
	if !slices.Contains(lines, "rm c0ffee") {
		t.Errorf("the pre-pull did not ready the image with a created and removed container: %q", lines)
	}
}

// TestPrepull_UnreachableHostFailsAlone: a host that cannot be reached is
// failed with the reason; the others pull.
func TestPrepull_UnreachableHostFailsAlone(t *testing.T) {
	a, h := prepullApp(t, "v1")
	h.down["10.0.0.2"] = true
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		switch {
		case r.Host == "10.0.0.2" && (r.Outcome != PrepullFailed || !strings.Contains(r.Reason, "no route to host")):
			t.Errorf("unreachable host: %+v", r)
		case r.Host != "10.0.0.2" && r.Outcome != PrepullPulled:
			t.Errorf("%s held back: %+v", r.Host, r)
		}
	}
}

// TestPrepull_SkipsHostShortOfSpace: a host with 812 MiB free is skipped
// for a 300 MiB image (1 GiB kept free), with the reason, and pulls
// nothing; a host as short that has the image already counts as present.
func TestPrepull_SkipsHostShortOfSpace(t *testing.T) {
	a, h := prepullApp(t, "v1")
	h.write("10.0.0.1/free", strconv.Itoa(812<<10))
	h.write("10.0.0.3/free", strconv.Itoa(812<<10))
	ref := a.Config.Repository + ":v2"
	h.write("10.0.0.3/images/"+imageKey(ref), `["x@sha256:d1"]|testapp`+"\n")
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{ImageSize: 300 << 20})
	if err != nil {
		t.Fatal(err)
	}
	got := outcomes(res)
	if got["10.0.0.1"] != PrepullSkipped || got["10.0.0.2"] != PrepullPulled || got["10.0.0.3"] != PrepullPresent {
		t.Fatalf("outcomes = %v", got)
	}
	const reason = "only 812 MiB free in /var/lib/docker, the image needs 300 MiB + 1 GiB kept free"
	if res[0].Reason != reason {
		t.Errorf("reason = %q, want %q", res[0].Reason, reason)
	}
	if h.hasImage("10.0.0.1", ref) || slices.ContainsFunc(h.docker("10.0.0.1"), func(l string) bool { return strings.HasPrefix(l, "pull") }) {
		t.Error("the short host pulled")
	}
	// Exactly at the limit is enough: 300 MiB + 1 GiB free.
	h.write("10.0.0.1/free", strconv.Itoa((300<<10)+(1<<20)))
	res, _ = a.Prepull(context.Background(), "v2", PrepullOptions{ImageSize: 300 << 20})
	if res[0].Outcome != PrepullPulled {
		t.Errorf("host with just enough space: %+v", res[0])
	}
}

// TestPrepull_UnreadableFreeSpaceFails: a host whose free space cannot be
// read (df prints no number) fails with the reason and pulls nothing.
func TestPrepull_UnreadableFreeSpaceFails(t *testing.T) {
	a, h := prepullApp(t, "v1")
	h.write("10.0.0.1/free", "-")
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != PrepullFailed || !strings.Contains(res[0].Reason, "cannot read the free space of /var/lib/docker") || h.hasImage("10.0.0.1", a.Config.Repository+":v2") {
		t.Errorf("10.0.0.1: %+v", res[0])
	}
	if !strings.Contains(h.read("10.0.0.1/docker.log"), "info") || strings.Contains(h.read("10.0.0.1/docker.log"), "pull") {
		t.Errorf("docker commands: %q", h.docker("10.0.0.1"))
	}
}

// TestPrepull_Evicts: before pulling, the images of the versions to evict
// are removed when no container uses them; one in use, the version
// pre-pulled and the app's own version stay.
func TestPrepull_Evicts(t *testing.T) {
	a, h := prepullApp(t, "v1")
	repo := a.Config.Repository
	for _, v := range []string{"v0", "vused", "v1", "v2"} {
		h.write("10.0.0.1/images/"+imageKey(repo+":"+v), `[]|testapp`+"\n")
	}
	h.write("10.0.0.1/used/"+imageKey(repo+":vused"), "c0ffee\n")
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{Evict: []string{"v0", "vused", "v1", "v2", "vgone"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].Evicted, []string{"v0"}) || res[0].Outcome != PrepullPresent {
		t.Errorf("10.0.0.1: %+v, want v0 evicted and v2 present", res[0])
	}
	for v, want := range map[string]bool{"v0": false, "vused": true, "v1": true, "v2": true} {
		if h.hasImage("10.0.0.1", repo+":"+v) != want {
			t.Errorf("image %s kept = %v, want %v", v, !want, want)
		}
	}
	if len(res[1].Evicted) != 0 || res[1].Outcome != PrepullPulled {
		t.Errorf("10.0.0.2: %+v", res[1])
	}
}

// TestPrepull_InvalidVersionTouchesNoHost: a version (or one to evict)
// that is neither a tag nor a sha256 digest is refused before any host.
func TestPrepull_InvalidVersionTouchesNoHost(t *testing.T) {
	a, h := prepullApp(t, "v1")
	for _, v := range []string{"", "-v2", ".v2", "v2;id", "v2 x", "v2\n", "../v2", "a/b", "v2@sha256:00", "sha256:abc",
		"sha256:" + strings.Repeat("A", 64), strings.Repeat("a", 129), "$(id)"} {
		if _, err := a.Prepull(context.Background(), v, PrepullOptions{}); !errors.Is(err, kamal.ErrVersion) || !errors.Is(err, ErrPrepull) {
			t.Errorf("Prepull(%q) = %v, want ErrVersion", v, err)
		}
	}
	if _, err := a.Prepull(context.Background(), "v2", PrepullOptions{Evict: []string{"v0", "v0;id"}}); !errors.Is(err, kamal.ErrVersion) {
		t.Errorf("invalid version to evict: %v", err)
	}
	if len(h.runs) != 0 {
		t.Errorf("hosts touched: %q", h.runs)
	}
	digest := "sha256:" + strings.Repeat("ab", 32)
	res, err := a.Prepull(context.Background(), digest, PrepullOptions{})
	if err != nil || res[0].Outcome != PrepullPulled || !h.hasImage("10.0.0.1", a.Config.Repository+"@"+digest) {
		t.Errorf("digest version: %+v, %v", res, err)
	}
	if _, err := a.Prepull(context.Background(), strings.Repeat("a", 128), PrepullOptions{}); err != nil {
		t.Errorf("128-character tag refused: %v", err)
	}
}

// TestPrepull_NoRoleHost: an app whose hosts run only accessories has
// nothing to pre-pull.
func TestPrepull_NoRoleHost(t *testing.T) {
	a, _ := prepullApp(t, "v1")
	a.Hosts = slices.DeleteFunc(a.Hosts, func(hp *kamal.HostPlan) bool { return len(hp.Apps) > 0 })
	if _, err := a.Prepull(context.Background(), "v2", PrepullOptions{}); !errors.Is(err, ErrPrepull) {
		t.Errorf("err = %v, want ErrPrepull", err)
	}
}

// TestPrepull_WrongServiceLabelFails: an image without the app's service
// label fails its host permanently, and a failed pull fails with the
// reason masked.
func TestPrepull_WrongServiceLabelFails(t *testing.T) {
	a, h := prepullApp(t, "v1")
	a.Redact = func(s string) string { return strings.ReplaceAll(s, "s3cret-value", "[REDACTED]") }
	h.write("10.0.0.1/label", "other")
	h.write("10.0.0.2/pullfail", "Error response from daemon: denied for s3cret-value")
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != PrepullFailed || !strings.Contains(res[0].Reason, "missing the 'service' label") || !strings.Contains(res[0].Reason, ErrPermanent.Error()) {
		t.Errorf("wrong label: %+v", res[0])
	}
	if res[1].Outcome != PrepullFailed || strings.Contains(res[1].Reason, "s3cret") || !strings.Contains(res[1].Reason, "denied for [REDACTED]") {
		t.Errorf("failed pull: %+v", res[1])
	}
	if res[2].Outcome != PrepullPulled {
		t.Errorf("10.0.0.3: %+v", res[2])
	}
}

// TestPrepull_DeployThenFindsImagePresent: after a pre-pull of v2, the
// deploy of v2 (with the registry's digest) records its pull step as
// "present" and pulls nothing, without reading the free space; a digest
// that moved makes it pull again.
func TestPrepull_DeployThenFindsImagePresent(t *testing.T) {
	a, h := prepullApp(t, "v1")
	if _, err := a.Prepull(context.Background(), "v2", PrepullOptions{Digest: "sha256:d1"}); err != nil {
		t.Fatal(err)
	}
	deploy := func(digest string) *applyRun {
		a2, _ := prepullApp(t, "v2")
		a2.SSH, a2.ImageDigest = h, digest
		r := newApplyRun(a2, &Plan{Version: "v2"})
		r.pullOn(context.Background(), []*HostPlan{{Host: "10.0.0.1"}, {Host: "10.0.0.2"}})
		r.auditWG.Wait()
		return r
	}
	r := deploy("sha256:d1")
	for _, host := range []string{"10.0.0.1", "10.0.0.2"} {
		steps := r.hostRes[host].Steps
		if len(steps) != 1 || steps[0].Kind != StepPull || steps[0].Reason != "present" || steps[0].Error != "" {
			t.Errorf("%s: deploy's pull step %+v, want present", host, steps)
		}
		pulls := 0
		for _, l := range h.docker(host) {
			if strings.HasPrefix(l, "pull ") {
				pulls++
			}
			if strings.HasPrefix(l, "info") && pulls > 0 {
				t.Errorf("%s: the deploy's pull read the free space", host)
			}
		}
		if pulls != 1 {
			t.Errorf("%s: %d pulls, want the pre-pull's only", host, pulls)
		}
	}
	r = deploy("sha256:moved")
	if s := r.hostRes["10.0.0.1"].Steps; len(s) != 1 || s[0].Reason != "pulled" {
		t.Errorf("moved digest: %+v, want pulled", s)
	}
	if !strings.Contains(h.read("10.0.0.1/.kamal/testapp-audit.log"), "Pulled image with version v2") {
		t.Error("the deploy's pull wrote no audit line")
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 KiB", 512 << 10: "512 KiB", 812 << 20: "812 MiB", 1 << 30: "1 GiB", 3 << 29: "1.5 GiB", 10 << 30: "10 GiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestPrepull_APIHostPullsWithTheScript: on a host reached through the
// Docker API, a pre-pull asks the API whether the image is there, then
// pulls with the script, which checks the free space first: never
// through the API's pull, which cannot. The deploy's pull still uses it.
func TestPrepull_APIHostPullsWithTheScript(t *testing.T) {
	a, h := prepullApp(t, "v1")
	api, _, calls := fakeEngine(t)
	api.learn("10.0.0.1", "/root", "", "")
	a.apiOnce.Do(func() { a.api = api })
	res, err := a.Prepull(context.Background(), "v2", PrepullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := a.Config.Repository + ":v2"
	if res[0].Outcome != PrepullPulled || !h.hasImage("10.0.0.1", ref) || !slices.Contains(h.docker("10.0.0.1"), "info --format {{.DockerRootDir}}") {
		t.Errorf("10.0.0.1: %+v, docker %q", res[0], h.docker("10.0.0.1"))
	}
	if want := []string{"GET /images/" + ref + "/json"}; !slices.Equal(*calls, want) {
		t.Errorf("API calls %q, want %q", *calls, want)
	}
	r := newApplyRun(a, &Plan{Version: "v1"})
	if _, err := r.pullImage(context.Background(), "10.0.0.1", ref, "", 0, false); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(*calls, "POST /images/create?fromImage=10.231.0.1%3A5000%2Ftestapp&tag=v2") {
		t.Errorf("the deploy's pull did not use the API: %q", *calls)
	}
}
