package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// jobReceiver is where the lab's release jobs (testapp job) POST: it
// records each request's path, body and time.
type jobReceiver struct {
	url  string
	mu   sync.Mutex
	hits []jobHit
}

type jobHit struct {
	path, body string
	at         time.Time
}

func newJobReceiver(t *testing.T) *jobReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "10.231.0.1:0") // the lab bridge: the hosts' containers reach it
	if err != nil {
		t.Fatal(err)
	}
	r := &jobReceiver{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.hits = append(r.hits, jobHit{path: req.URL.Path, body: string(b), at: time.Now()})
		r.mu.Unlock()
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

// count returns the hits on path and the time of the first.
func (r *jobReceiver) count(path string) (int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, first := 0, time.Time{}
	for _, h := range r.hits {
		if h.path == path {
			if n == 0 {
				first = h.at
			}
			n++
		}
	}
	return n, first
}

// alertWith reports whether an alert of kind has a detail holding every
// part.
func (s *alertSink) alertWith(kind string, parts ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		d := fmt.Sprint(e["detail"])
		ok := e["event"] == kind
		for _, p := range parts {
			ok = ok && strings.Contains(d, p)
		}
		if ok {
			return true
		}
	}
	return false
}

func uniqueTag(t *testing.T, prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestE2EJobs_PreDeploy: a pre_deploy job of the new image POSTs to the
// test before any request is answered by the new version, once per
// revision (a forced pass that redeploys the same revision does not run
// it again; rerun_jobs=1 does); a job that exits 3 fails the release with
// the old version serving and no failed request, its output kept and the
// failure alerted with the job and the code; a job past its timeout is
// killed and its container removed.
func TestE2EJobs_PreDeploy(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{selfHeal: false})
	a := &e2eApp{t: t, l: l}
	rcv := newJobReceiver(t)
	ctx := context.Background()
	good, bad := uniqueTag(t, "jobs-good-"), uniqueTag(t, "jobs-bad-")
	for _, tag := range []string{good, bad} {
		if err := l.PushTestappVersion(ctx, tag); err != nil { // answers with its tag
			t.Fatal(err)
		}
	}
	jobs := func(cmd, timeout string) string {
		return "  jobs:\n    - {name: migrate, role: web, cmd: " + cmd + ", timeout: " + timeout + "}\n"
	}
	auth := map[string]string{"Authorization": "Bearer " + d.token}

	// 1. The job runs once, before the new version answers.
	ld := startLoad(webAddrs)
	w.commit(labDeployYML(t, good, "", jobs("job "+rcv.url+"/migrate 0", "60s")), "good with a job")
	waitServing(t, good, 120*time.Second)
	d.waitIdle("succeeded")
	ld.finish(t, "deploy with a pre_deploy job")
	n, ran := rcv.count("/migrate")
	if n != 1 {
		t.Fatalf("the job ran %d times, want 1", n)
	}
	ld.mu.Lock()
	firstNew := ld.first[good]
	ld.mu.Unlock()
	if firstNew.IsZero() || !ran.Before(firstNew) {
		t.Fatalf("job at %s, first answer of the new version at %s", ran.Format(time.StampMicro), firstNew.Format(time.StampMicro))
	}
	t.Logf("job %s before the first answer of the new version", firstNew.Sub(ran))
	if audit := a.sh(0, "cat /root/.kamal/testapp-audit.log"); !strings.Contains(audit, "[web] Executed cmd 'job "+rcv.url+"/migrate 0' on app version "+good) {
		t.Errorf("audit log lacks the job:\n%s", audit)
	}

	// 2. A forced pass that redeploys the same revision skips it.
	redeploy := func(query string) {
		t.Helper()
		a.sh(0, "docker stop testapp-web-"+good+" >/dev/null")
		if code := d.post("/api/v1/apps/testapp/sync?"+query, nil, auth); code != 202 {
			t.Fatalf("sync?%s: %d", query, code)
		}
		waitFor(t, 60*time.Second, "the forced pass restarts the container", func() bool {
			running, _ := a.containers(0)
			return running["testapp-web-"+good] != ""
		})
		d.waitIdle("succeeded")
	}
	redeploy("force=1")
	if n, _ := rcv.count("/migrate"); n != 1 {
		t.Fatalf("a retried pass of the same revision ran the job again (%d runs)", n)
	}
	redeploy("force=1&rerun_jobs=1")
	if n, _ := rcv.count("/migrate"); n != 2 {
		t.Fatalf("rerun_jobs=1: %d runs, want 2", n)
	}

	// 3. A job that exits 3 fails the release; the old version serves.
	ld = startLoad(webAddrs)
	w.commit(labDeployYML(t, bad, "", jobs("job "+rcv.url+"/failing 3", "60s")), "bad job")
	waitFor(t, 120*time.Second, "deploy_failed alert naming the job and its exit code", func() bool {
		return alerts.alertWith("deploy_failed", "migrate", "exit 3")
	})
	d.waitIdle("failed")
	ld.finish(t, "a failing pre_deploy job")
	if n, _ := rcv.count("/failing"); n != 1 {
		t.Errorf("the failing job ran %d times", n)
	}
	for i := range 2 {
		running, all := a.containers(i)
		if running["testapp-web-"+good] == "" || all["testapp-web-"+bad] != "" {
			t.Errorf("host %d after a failed job: running %v, all %v", i, running, all)
		}
	}
	if code, body := d.get("/api/v1/apps/testapp/history", "Bearer "+d.token); code != 200 || !strings.Contains(string(body), "testapp job: exit 3") {
		t.Errorf("history does not keep the job's output (%d): %.2000s", code, body)
	}
	out, err := exec.Command(capstanBinary(t), "history", "testapp", "--server", "http://"+d.addr, "--token", d.token).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "testapp job: exit 3") {
		t.Errorf("capstan history: %v\n%s", err, out)
	}

	// 4. A job past its timeout is killed and removed.
	w.commit(labDeployYML(t, bad, "", jobs("job "+rcv.url+"/slow 0 120s", "3")), "slow job")
	waitFor(t, 120*time.Second, "deploy_failed alert for the timeout", func() bool {
		return alerts.alertWith("deploy_failed", "migrate", "timeout 3s")
	})
	d.waitIdle("failed")
	if left := a.sh(0, "docker ps -aq --filter name=testapp-web-exec-"); left != "" {
		t.Errorf("a job container outlived its timeout: %s", left)
	}
	if running, _ := a.containers(0); running["testapp-web-"+good] == "" {
		t.Errorf("the old version stopped after a job timeout: %v", running)
	}
}
