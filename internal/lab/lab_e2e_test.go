package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

// opensshRun runs argv on host over OpenSSH with strict host-key checking
// against knownHosts.
func opensshRun(ctx context.Context, l *lab.Lab, knownHosts, addr, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "ssh",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=5",
		"-i", l.Identity,
		"root@"+addr, script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestE2ELab_PullAndRunOverSSH: over SSH with host-key verification, each
// host pulls the test image from the lab registry and runs it on a
// user-defined kamal network with a published port; the test reaches it
// from the root namespace.
func TestE2ELab_PullAndRunOverSSH(t *testing.T) {
	l := lab.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	errs := make([]error, len(l.Hosts))
	for i, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "labtest-" + h.Name
			script := fmt.Sprintf(`set -e
docker rm -f %[1]s >/dev/null 2>&1 || true
docker network inspect kamal >/dev/null 2>&1 || docker network create kamal >/dev/null
docker pull -q %[2]s >/dev/null
docker run -d --name %[1]s --network kamal -p 18080:3000 --label capstan-lab-test=1 %[2]s >/dev/null
hostname`, name, l.Image("v2"))
			out, err := opensshRun(ctx, l, l.KnownHosts, h.Addr, script)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %v: %s", h.Name, err, out)
				return
			}
			if got := strings.TrimSpace(out); got != h.Name {
				errs[i] = fmt.Errorf("%s: remote hostname %q", h.Name, got)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i, h := range l.Hosts {
			_, _ = l.Exec(context.Background(), i, "docker", "rm", "-f", "labtest-"+h.Name)
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range l.Hosts {
		body := getWithRetry(t, "http://"+h.Addr+":18080/", 5*time.Second)
		if !strings.HasPrefix(body, "v2 ") {
			t.Errorf("%s: GET / = %q, want the v2 test app", h.Name, body)
		}
	}
	// Each host's daemon is its own: the engine IDs differ (lab.md trap).
	ids := map[string]string{}
	for i, h := range l.Hosts {
		out, err := l.Exec(ctx, i, "docker", "info", "--format", "{{.ID}}")
		if err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSpace(out)
		if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share docker engine ID %s", h.Name, other, id)
		}
		ids[id] = h.Name
	}
}

// TestE2ELab_HostKeyMismatchRefused: a host whose key does not match
// known_hosts is refused, and the command never runs.
func TestE2ELab_HostKeyMismatchRefused(t *testing.T) {
	l := lab.Start(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	kh, err := os.ReadFile(l.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	// Give host 1's address host 2's key.
	var key2 string
	for _, line := range strings.Split(string(kh), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == l.Hosts[1].Addr {
			key2 = f[1] + " " + f[2]
		}
	}
	if key2 == "" {
		t.Fatalf("no key for %s in %s", l.Hosts[1].Addr, l.KnownHosts)
	}
	wrong := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(wrong, []byte(l.Hosts[0].Addr+" "+key2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := "/root/capstan-lab-marker-" + fmt.Sprint(time.Now().UnixNano())
	out, err := opensshRun(ctx, l, wrong, l.Hosts[0].Addr, "touch "+marker)
	if err == nil {
		t.Fatalf("ssh with a mismatched host key succeeded: %s", out)
	}
	if !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("ssh failed, but not for the host key: %s", out)
	}
	if _, err := l.Exec(ctx, 0, "test", "-e", marker); err == nil {
		t.Errorf("the command ran on %s despite the wrong host key", l.Hosts[0].Name)
	}
	// The right known_hosts works, so the refusal above was the key's doing.
	if out, err := opensshRun(ctx, l, l.KnownHosts, l.Hosts[0].Addr, "true"); err != nil {
		t.Fatalf("ssh with the lab's known_hosts: %v: %s", err, out)
	}
}

// TestE2ELab_HostsIsolated: each host has its own /root and hostname, and
// hosts reach each other and the registry but nothing outside the lab.
func TestE2ELab_HostsIsolated(t *testing.T) {
	l := lab.Start(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := "/root/isolation-" + fmt.Sprint(time.Now().UnixNano())
	if _, err := l.Exec(ctx, 0, "touch", f); err != nil {
		t.Fatal(err)
	}
	defer l.Exec(ctx, 0, "rm", "-f", f)
	if _, err := l.Exec(ctx, 1, "test", "-e", f); err == nil {
		t.Errorf("%s sees %s's /root", l.Hosts[1].Name, l.Hosts[0].Name)
	}
	if out, err := l.Exec(ctx, 1, "hostname"); err != nil || strings.TrimSpace(out) != l.Hosts[1].Name {
		t.Errorf("hostname on %s = %q, %v", l.Hosts[1].Name, out, err)
	}
	if out, err := l.Exec(ctx, 1, "ip", "route", "get", "1.1.1.1"); err == nil {
		t.Errorf("%s has a route out of the lab: %s", l.Hosts[1].Name, out)
	}
	if _, err := l.Exec(ctx, 1, "bash", "-c", "exec 3<>/dev/tcp/"+l.Hosts[0].Addr+"/22"); err != nil {
		t.Errorf("%s cannot reach %s:22: %v", l.Hosts[1].Name, l.Hosts[0].Name, err)
	}
}

func getWithRetry(t *testing.T, url string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
