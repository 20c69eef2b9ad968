package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

// faultyRegistry is a reverse proxy in front of the lab registry, on the
// lab bridge, that fails what the lab hosts ask of it (their pulls) while
// capstan, which runs on the bridge address itself, still gets true
// answers: the registry breaks between capstan's check of the tag and the
// hosts' pulls. Layers fail; the image configuration (a small blob) and
// manifests pass, so the layer download itself is what breaks.
type faultyRegistry struct {
	addr string
	mode atomic.Value // string: "", "down", "500", "truncate"
	hits atomic.Int64 // requests failed on purpose
}

func newFaultyRegistry(t *testing.T, upstream string) *faultyRegistry {
	t.Helper()
	ln, err := net.Listen("tcp", lab.Subnet+".1:0")
	if err != nil {
		t.Fatal(err)
	}
	fr := &faultyRegistry{addr: ln.Addr().String()}
	fr.mode.Store("")
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, _, _ := net.SplitHostPort(r.RemoteAddr)
		blob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
		mode := fr.mode.Load().(string)
		if from == lab.Subnet+".1" || mode == "" || (mode != "down" && !blob) {
			rp.ServeHTTP(w, r)
			return
		}
		if mode == "down" { // the connection drops without an answer
			fr.hits.Add(1)
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		rp.ServeHTTP(&faulting{ResponseWriter: w, mode: mode, hits: &fr.hits}, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fr
}

// faulting fails a layer (a blob over 64 KB; the image configuration, a
// small blob, passes): with mode "500" the registry answers 500 instead,
// with "truncate" half of the layer is sent, its whole length promised,
// and the connection aborted. Docker resumes a cut download with a range
// request (and so survives one cut on its own); "truncate" cuts those at
// once too.
type faulting struct {
	http.ResponseWriter
	mode     string
	hits     *atomic.Int64
	fail     bool
	left     int64
	replaced bool
}

func (f *faulting) WriteHeader(code int) {
	n, _ := strconv.ParseInt(f.Header().Get("Content-Length"), 10, 64)
	f.fail = (code == http.StatusOK && n > 64<<10) || (code == http.StatusPartialContent && f.mode == "truncate")
	if !f.fail {
		f.ResponseWriter.WriteHeader(code)
		return
	}
	f.hits.Add(1)
	if f.mode == "500" {
		f.Header().Del("Content-Length")
		f.ResponseWriter.WriteHeader(http.StatusInternalServerError)
		_, _ = f.ResponseWriter.Write([]byte("injected failure\n"))
		f.replaced = true
		return
	}
	if code == http.StatusOK {
		f.left = n / 2
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *faulting) Write(b []byte) (int, error) {
	switch {
	case !f.fail:
		return f.ResponseWriter.Write(b)
	case f.replaced: // the 500 went out instead
		return len(b), nil
	case int64(len(b)) >= f.left:
		_, _ = f.ResponseWriter.Write(b[:f.left])
		_ = http.NewResponseController(f.ResponseWriter).Flush()
		panic(http.ErrAbortHandler)
	}
	f.left -= int64(len(b))
	return f.ResponseWriter.Write(b)
}

// TestE2EFault_RegistryFailsDuringThePull: the registry answers capstan's
// check of the new tag, then fails the hosts' pulls: it drops their
// connections, answers 500 for a layer, or cuts a layer half way. Each
// time the pass fails naming the pull, once, alerted once; the old
// version serves throughout (0 failed requests) and no container of the
// new version is left; once the registry works again the next poll
// deploys the same commit.
func TestE2EFault_RegistryFailsDuringThePull(t *testing.T) {
	startLab(t, 3) // skips without a lab: the proxy listens on the lab bridge
	fr := newFaultyRegistry(t, lab.RegistryAddr)
	l, w, d, alerts := truthLab(t, serveOpts{poll: "2s", insecure: lab.RegistryAddr + ", " + fr.addr})
	ld := startLoad(webAddrs)
	a := &e2eApp{t: t, l: l}
	for i, mode := range []string{"down", "500", "truncate"} {
		tag := fmt.Sprintf("pullfault-%s-%d", mode, time.Now().UnixNano())
		if err := l.PushUniqueTestapp(context.Background(), tag); err != nil {
			t.Fatal(err)
		}
		fr.mode.Store(mode)
		yml := strings.Replace(deployYML(t, tag), "server: "+l0Registry, "server: "+fr.addr, 1)
		sha := w.commit(yml, "pull fault "+mode)
		waitFor(t, 60*time.Second, mode+": the pass fails", func() bool {
			st := d.status("testapp")
			return st["revision"] == sha && st["running"] == false && st["last_outcome"] == "failed"
		})
		st := d.status("testapp")
		t.Logf("%s: %d requests failed on purpose; the pass: %v", mode, fr.hits.Load(), st["last_error"])
		if errText := fmt.Sprint(st["last_error"]); !strings.Contains(errText, "pull") {
			t.Errorf("%s: the error does not name the pull: %s", mode, errText)
		}
		time.Sleep(3 * time.Second) // more polls
		if n := alerts.count("event", "deploy_failed", "revision", sha); n != 1 {
			t.Errorf("%s: %d deploy_failed alerts, want 1: %s", mode, n, alerts)
		}
		for h := range l.Hosts {
			if _, all := a.containers(h); strings.Contains(fmt.Sprint(all), tag) {
				t.Errorf("%s: host %d keeps a container of the release that failed to pull: %v", mode, h, all)
			}
		}
		fr.mode.Store("")
		waitRunning(t, a, tag, mode+": the registry is back, the same commit deploys")
		d.waitIdle("succeeded")
		if i == 0 {
			waitServing(t, "v2", 10*time.Second) // the unique images answer v2
		}
	}
	ld.finish(t, "the registry failing the hosts' pulls")
}

// TestE2EFault_DiskFullDuringThePull: the Docker data root of one web host
// has no room for the new layer (a 1 MB tmpfs over the directory dockerd
// downloads layers into). Like an unreachable host, it does not hold the
// others back: they take the release, while the pass fails naming that
// host and ENOSPC, alerted once, and the host keeps serving the old
// version (0 failed requests anywhere). Once there is room the next poll
// deploys the same commit there.
func TestE2EFault_DiskFullDuringThePull(t *testing.T) {
	l, w, d, alerts := truthLab(t, serveOpts{poll: "2s"})
	a := &e2eApp{t: t, l: l}
	ld := startLoad(webAddrs)
	tag := fmt.Sprintf("diskfull-%d", time.Now().UnixNano())
	if err := l.PushUniqueTestapp(context.Background(), tag); err != nil {
		t.Fatal(err)
	}
	const tmp = "/var/lib/docker/tmp"
	if out, err := l.Exec(context.Background(), 1, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmp); err != nil {
		t.Fatalf("mount a small tmpfs: %v: %s", err, out)
	}
	unmount := func() { _, _ = l.Exec(context.Background(), 1, "umount", tmp) }
	t.Cleanup(unmount)
	sha := w.commit(deployYML(t, tag), "a release that does not fit on one host")
	waitFor(t, 60*time.Second, "the pass fails", func() bool {
		st := d.status("testapp")
		return st["revision"] == sha && st["running"] == false && st["last_outcome"] == "failed"
	})
	errText := fmt.Sprint(d.status("testapp")["last_error"])
	t.Logf("the pass: %s", errText)
	if !strings.Contains(errText, "10.231.0.12: image pull failed") || !strings.Contains(errText, "no space left on device") {
		t.Errorf("the error does not name the host and ENOSPC: %s", errText)
	}
	time.Sleep(3 * time.Second) // more polls
	if n := alerts.count("event", "deploy_failed", "revision", sha); n != 1 {
		t.Errorf("%d deploy_failed alerts, want 1: %s", n, alerts)
	}
	if got := get(t, webAddrs[1]); !strings.HasPrefix(got, "v1 ") {
		t.Errorf("the full host does not serve the old version: %q", got)
	}
	if running, _ := a.containers(1); len(running) != 1 || strings.Contains(fmt.Sprint(running), tag) {
		t.Errorf("the full host runs %v", running)
	}
	unmount()
	waitRunning(t, a, tag, "there is room again: the same commit deploys")
	d.waitIdle("succeeded")
	ld.finish(t, "the disk full on one host during the pull")
}

// waitRunning waits until every host runs one container, of version tag.
func waitRunning(t *testing.T, a *e2eApp, tag, what string) {
	t.Helper()
	waitFor(t, 60*time.Second, what, func() bool {
		for h := range a.l.Hosts {
			running, _ := a.containers(h)
			if len(running) != 1 || !strings.Contains(fmt.Sprint(running), tag) {
				return false
			}
		}
		return true
	})
}
