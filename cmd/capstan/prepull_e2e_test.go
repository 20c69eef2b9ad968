package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

// pushWebhook tells the daemon, as GitHub would, that the branch moved to
// sha.
func (d *serveProc) pushWebhook(sha string) {
	d.t.Helper()
	d.pushWebhookFor(d.repo, sha)
}

// pushWebhookFor tells the daemon, as GitHub would, that the main branch of
// repo moved to sha.
func (d *serveProc) pushWebhookFor(repo, sha string) {
	d.t.Helper()
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":%q,"repository":{"clone_url":%q},"sender":{"login":"ada"}}`, sha, repo))
	mac := hmac.New(sha256.New, []byte("gh-secret"))
	mac.Write(body)
	if code := d.post("/webhooks/github", body, map[string]string{"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))}); code != http.StatusOK {
		d.t.Fatalf("push webhook: %d", code)
	}
}

// prepulled returns the daemon's pre-pull records of testapp.
func (d *serveProc) prepulled() []map[string]any {
	var v struct {
		Prepulled []map[string]any `json:"prepulled"`
	}
	_, body := d.get("/api/v1/apps/testapp", "Bearer "+d.token)
	_ = json.Unmarshal(body, &v)
	return v.Prepulled
}

// pullSteps returns the pull steps of the last pass that deployed version.
func (d *serveProc) pullSteps(version string) []string {
	var passes []struct {
		Version string
		Steps   []struct{ Host, Step string }
	}
	_, body := d.get("/api/v1/apps/testapp/history", "Bearer "+d.token)
	_ = json.Unmarshal(body, &passes)
	for _, p := range passes {
		if p.Version != version {
			continue
		}
		var out []string
		for _, s := range p.Steps {
			if strings.HasPrefix(s.Step, "pull") {
				out = append(out, s.Host+": "+s.Step)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// TestE2EPrepull_BigImage: a ~315 MB image in 11 layers of random data.
// Asked by CI (POST …/prepull) before the commit lands, it is pulled onto
// every host; the commit then deploys without pulling (every pull step
// "present"). The same deploy of another big tag not pre-pulled pulls. The
// figures (commit → all web hosts serve it, by webhook) are logged next to
// a small image's; under load, 0 failed requests.
func TestE2EPrepull_BigImage(t *testing.T) {
	l, w, d, _ := truthLab(t, serveOpts{poll: "30s"})
	ctx := context.Background()
	for _, tag := range []string{"big1", "big2"} {
		began := time.Now()
		if err := l.PushBigTestapp(ctx, tag); err != nil {
			t.Fatal(err)
		}
		t.Logf("pushed %s to the lab registry in %s", tag, time.Since(began).Round(time.Millisecond))
	}
	// A run before this one may have left the big images on the hosts.
	a := &e2eApp{t: t, l: l}
	for i := range l.Hosts {
		a.sh(i, fmt.Sprintf("docker image rm -f %[1]s/testapp:big1 %[1]s/testapp:big2 >/dev/null 2>&1; true", l.RegistryAddr))
	}
	ld := startLoad(webAddrs)
	deploy := func(version string) time.Duration {
		t.Helper()
		sha := w.commit(deployYML(t, version), version)
		d.pushWebhook(sha)
		took := waitServing(t, version, 5*time.Minute)
		d.waitIdle("succeeded")
		return took
	}
	small := deploy("v2")

	if code := d.post("/api/v1/apps/testapp/prepull?version=big1", nil, map[string]string{"Authorization": "Bearer " + d.token}); code != http.StatusAccepted {
		t.Fatalf("prepull: %d", code)
	}
	began := time.Now()
	waitFor(t, 5*time.Minute, "big1 pre-pulled on every host", func() bool {
		n := 0
		for _, p := range d.prepulled() {
			if p["version"] == "big1" && p["outcome"] == "pulled" {
				n++
			}
		}
		return n == 3
	})
	t.Logf("big1 pre-pulled on 3 hosts in %s", time.Since(began).Round(time.Millisecond))
	for _, addr := range webAddrs {
		if got := get(t, addr); !strings.HasPrefix(got, "v2 ") {
			t.Fatalf("%s serves %q after a pre-pull: it must not deploy", addr, got)
		}
	}
	prepulled := deploy("big1")
	cold := deploy("big2")
	for version, want := range map[string]string{"big1": "present", "big2": "pulled"} {
		steps := d.pullSteps(version)
		if len(steps) != 3 {
			t.Errorf("%s: pull steps %q, want one per host", version, steps)
		}
		for _, s := range steps {
			if !strings.Contains(s, want) {
				t.Errorf("%s: %q, want the pull %s", version, s, want)
			}
		}
	}
	for _, p := range d.prepulled() {
		if p["version"] == "big1" {
			t.Errorf("big1 still listed as pre-pulled after its deploy: %v", p)
		}
	}
	t.Logf("commit (webhook) → all web hosts serve it: small image %s; 315 MB image pre-pulled %s (%.2f× small); not pre-pulled %s (%.2f× small)",
		small.Round(time.Millisecond), prepulled.Round(time.Millisecond), prepulled.Seconds()/small.Seconds(),
		cold.Round(time.Millisecond), cold.Seconds()/small.Seconds())
	floorSmall, floorBig := floorRun(t, l, 0, l.RegistryAddr+"/testapp:v2"), floorRun(t, l, 0, l.RegistryAddr+"/testapp:big2")
	ld.finish(t, "a small deploy, a pre-pulled big one, a cold big one")
	benchReport(t, "Pre-pull: commit → all web hosts switched, with a 315 MB image (`TestE2EPrepull_BigImage`)",
		"Three lab hosts (2 web behind HAProxy, 1 worker), traffic running, the commit announced by a push webhook; one run of each deploy. "+
			"Floor: a bare `docker run -d` of the image (present) on the `kamal` network until `/up` answers, timed on a web host, under the same traffic, in the same run (median of 3).",
		[][]string{
			{"small image (6 MB, pulled during the deploy)", small.Round(time.Millisecond).String(), "1.00×", fmt.Sprintf("%.2f×", small.Seconds()/floorSmall.Seconds())},
			{"315 MB image, pre-pulled (`POST …/prepull`)", prepulled.Round(time.Millisecond).String(), fmt.Sprintf("%.2f×", prepulled.Seconds()/small.Seconds()), fmt.Sprintf("%.2f×", prepulled.Seconds()/floorBig.Seconds())},
			{"315 MB image, not pre-pulled", cold.Round(time.Millisecond).String(), fmt.Sprintf("%.2f×", cold.Seconds()/small.Seconds()), fmt.Sprintf("%.2f×", cold.Seconds()/floorBig.Seconds())},
			{"floor: `docker run` until `/up`, small image", floorSmall.Round(time.Millisecond).String(), "", ""},
			{"floor: `docker run` until `/up`, 315 MB image", floorBig.Round(time.Millisecond).String(), "", ""},
		}, []string{"deploy", "commit → switched", "vs the small image", "vs its floor"})
}

// floorRun is the floor of a switch on lab host i: a bare `docker run` of
// image (present on the host) on the kamal network until its /up answers,
// timed on the host itself; the median of three.
func floorRun(t testing.TB, l *lab.Lab, i int, image string) time.Duration {
	t.Helper()
	return floorFleet(t, l, []int{i}, image)
}

// floorFleet is the floor of a deploy that boots a container on each of
// the lab hosts at once, as a deploy does: bare `docker run`s started
// together, one per host, until the last /up answers; the median of three.
// The lab's hosts share this machine's cores, so this is the floor a
// deploy of several hosts can reach here.
func floorFleet(t testing.TB, l *lab.Lab, hosts []int, image string) time.Duration {
	t.Helper()
	var runs []time.Duration
	for range 3 {
		took := make([]time.Duration, len(hosts))
		var wg sync.WaitGroup
		for k, i := range hosts {
			wg.Go(func() { took[k] = floorOnce(t, l, i, image) })
		}
		wg.Wait()
		runs = append(runs, slices.Max(took))
	}
	return median(runs)
}

func floorOnce(t testing.TB, l *lab.Lab, i int, image string) time.Duration {
	t.Helper()
	script := `s=$(date +%s%N); id=$(docker run -d --network kamal -e APP_VERSION=floor "$1") || exit 1
ip=$(docker inspect -f '{{(index .NetworkSettings.Networks "kamal").IPAddress}}' "$id")
n=0; until curl -fsS -m 1 "http://$ip:3000/up" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 1000 ] && exit 1; sleep 0.01; done
e=$(date +%s%N); docker rm -f "$id" >/dev/null; echo $(( (e-s)/1000000 ))`
	out, err := l.Exec(context.Background(), i, "sh", "-c", script, "sh", image)
	if err != nil {
		t.Fatalf("floor run of %s: %v\n%s", image, err, out)
	}
	ms, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("floor run of %s: %q", image, out)
	}
	return time.Duration(ms) * time.Millisecond
}

// benchReport appends a table of figures to the file CAPSTAN_BENCH_REPORT
// names (.ci/bench writes docs/benchmarks.md with it); without it, the
// figures are only logged.
func benchReport(t testing.TB, title, how string, rows [][]string, header []string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "\n### %s\n\n%s\n\n| %s |\n|%s\n", title, how, strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(r, " | "))
	}
	t.Log(b.String())
	path := os.Getenv("CAPSTAN_BENCH_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
}
