package hostexec

// End-to-end tests against the lab (internal/lab): real hosts in network
// namespaces, each with OpenSSH sshd on port 22 and its own dockerd. They
// are named TestE2E… so the e2e tier selects them; lab.Start skips them
// (or fails them under CI=true) when the lab cannot run here.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/capstan-dev/capstan/internal/lab"
)

func labConfig(l *lab.Lab) Config {
	return Config{KnownHosts: []string{l.KnownHosts}, Keys: []string{l.Identity}, Home: os.TempDir()}
}

func labHost(l *lab.Lab, i int) Host { return Host{Addr: l.Hosts[i].Addr} }

// labHostKey reads host i's ed25519 key from the lab's known_hosts.
func labHostKey(t *testing.T, l *lab.Lab, i int) ssh.PublicKey {
	t.Helper()
	data, err := os.ReadFile(l.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		_, hosts, key, _, rest, err := ssh.ParseKnownHosts(data)
		if err != nil {
			break
		}
		data = rest
		if slices.Contains(hosts, l.Hosts[i].Addr) {
			return key
		}
	}
	t.Fatalf("no key for %s in %s", l.Hosts[i].Addr, l.KnownHosts)
	return nil
}

func TestE2E_HostKeys(t *testing.T) {
	l := lab.Start(t, 2)
	h := labHost(l, 0)
	key0, key1 := labHostKey(t, l, 0), labHostKey(t, l, 1)
	run := func(cfg Config) error {
		p := newPool(t, cfg)
		_, err := p.Run(testCtx(t, 20*time.Second), h, []string{"true"}, RunOptions{})
		return err
	}
	dir := t.TempDir()

	cfg := labConfig(l)
	if err := run(cfg); err != nil {
		t.Fatalf("lab known_hosts: %v", err)
	}

	cfg.KnownHosts = []string{filepath.Join(dir, "empty")}
	err := run(cfg)
	if !errors.Is(err, ErrUnknownHost) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(key0)) {
		t.Errorf("unknown host: want ErrUnknownHost naming %s, got %v", ssh.FingerprintSHA256(key0), err)
	}

	cfg.KnownHosts, cfg.AcceptNew = []string{filepath.Join(dir, "accept_new")}, true
	if err := run(cfg); err != nil {
		t.Fatalf("accept-new: %v", err)
	}
	if got, _ := os.ReadFile(cfg.KnownHosts[0]); string(got) != knownhosts.Line([]string{h.Addr}, key0)+"\n" {
		t.Errorf("accept-new recorded %q", got)
	}

	// lab1's address with lab2's key: a changed key.
	changed := writeFile(t, filepath.Join(dir, "changed"), []byte(knownhosts.Line([]string{h.Addr}, key1)+"\n"), 0o600)
	cfg.KnownHosts, cfg.AcceptNew = []string{changed}, true
	err = run(cfg)
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), changed+":1") {
		t.Errorf("changed key: want ErrHostKeyMismatch naming %s:1, got %v", changed, err)
	}
}

func TestE2E_UnreachableHost(t *testing.T) {
	l := lab.Start(t, 2)
	p := newPool(t, labConfig(l))
	// An address on the lab bridge with no host behind it: the dial hangs
	// (no ARP answer) until the deadline.
	ghost := Host{Addr: lab.Subnet + ".99"}
	var wg sync.WaitGroup
	var ghostErr error
	var ghostTook time.Duration
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		_, ghostErr = p.Run(ctx, ghost, []string{"true"}, RunOptions{})
		ghostTook = time.Since(start)
	})
	okErrs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			for range 3 {
				if _, okErrs[i] = p.Run(testCtx(t, 10*time.Second), labHost(l, i), []string{"true"}, RunOptions{}); okErrs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if !errors.Is(ghostErr, ErrUnreachable) {
		t.Errorf("want ErrUnreachable, got %v", ghostErr)
	}
	if ghostTook > 1500*time.Millisecond {
		t.Errorf("unreachable host took %v for a 1s deadline", ghostTook)
	}
	for i, err := range okErrs {
		if err != nil {
			t.Errorf("lab%d affected by the unreachable host: %v", i+1, err)
		}
	}
}

func TestE2E_SSHDKilledMidCommand(t *testing.T) {
	l := lab.Start(t, 1)
	t.Cleanup(func() { l.StartSSHD(0) })
	p := newPool(t, labConfig(l))
	h := labHost(l, 0)
	ctx := testCtx(t, 60*time.Second)
	if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx, h, []string{"sleep", "30"}, RunOptions{})
		errc <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if err := l.StopSSHD(0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("want ErrConnectionLost, got %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after sshd was killed")
	}
	if err := l.StartSSHD(0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatalf("next call after restart: %v", err)
	}
	if st := p.Stats()[mustResolve(t, p, h)]; st.Dials != 2 {
		t.Errorf("want a re-dial, Stats = %+v", st)
	}
}

func mustResolve(t testing.TB, p *Pool, h Host) string {
	t.Helper()
	r, err := p.Resolve(h)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}

// labConnections returns the established TCP connections to sshd on host i
// whose peer is the given local port.
func labConnections(t *testing.T, l *lab.Lab, i int, filter string) int {
	t.Helper()
	out, err := l.Exec(testCtx(t, 10*time.Second), i, "ss", "-tnH", "state", "established", "( sport = :22"+filter+" )")
	if err != nil {
		t.Fatalf("ss on lab%d: %v", i+1, err)
	}
	return countLines(out)
}

func TestE2E_ReuseOneConnection(t *testing.T) {
	l := lab.Start(t, 1)
	p := newPool(t, labConfig(l))
	h := labHost(l, 0)
	ctx := testCtx(t, 120*time.Second)
	if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	ours := fmt.Sprintf(" and dport = :%d", p.localPort(t, h))
	before := labConnections(t, l, 0, "")
	for i := range 200 {
		if _, err := p.Run(ctx, h, []string{"true"}, RunOptions{}); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	if n := labConnections(t, l, 0, ours); n != 1 {
		t.Errorf("our connection: %d matches on lab1, want 1", n)
	}
	if after := labConnections(t, l, 0, ""); after != before {
		t.Errorf("established connections on lab1: %d before, %d after 200 commands", before, after)
	}
	if st := p.Stats()[mustResolve(t, p, h)]; st.Dials != 1 || st.Commands != 201 {
		t.Errorf("Stats = %+v, want 1 dial, 201 commands", st)
	}
}

// localPort returns the local TCP port of h's pooled connection.
func (p *Pool) localPort(t *testing.T, h Host) int {
	t.Helper()
	r, err := p.Resolve(h)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.entry(r)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.get()
	if cl == nil {
		t.Fatal("no pooled connection")
	}
	return cl.LocalAddr().(*net.TCPAddr).Port
}

func TestE2E_ParallelFanOut(t *testing.T) {
	l := lab.Start(t, 3)
	cfg := labConfig(l)
	cfg.MaxDials = 2
	p := newPool(t, cfg)
	var mu sync.Mutex
	var inflight, peak int
	p.testHookDial = func(d int) {
		mu.Lock()
		inflight += d
		peak = max(peak, inflight)
		mu.Unlock()
	}
	ctx := testCtx(t, 30*time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	out := make([]string, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() {
			res, err := p.Run(ctx, labHost(l, i), []string{"sh", "-c", "sleep 1; hostname"}, RunOptions{})
			out[i], errs[i] = strings.TrimSpace(string(res.Stdout)), err
		})
	}
	wg.Wait()
	took := time.Since(start)
	for i := range 3 {
		if errs[i] != nil || out[i] != l.Hosts[i].Name {
			t.Errorf("host %d: %q, %v", i, out[i], errs[i])
		}
	}
	if took > 2500*time.Millisecond {
		t.Errorf("3 hosts × sleep 1 took %v: not parallel", took)
	}
	if peak != 2 {
		t.Errorf("peak concurrent dials %d, want the bound 2", peak)
	}
}

func TestE2E_ProxyJump(t *testing.T) {
	l := lab.Start(t, 2)
	cfg := labConfig(l)
	cfg.Proxy = l.Hosts[0].Addr // bare host = root@host:22, as in Kamal
	p := newPool(t, cfg)
	ctx := testCtx(t, 30*time.Second)
	res, err := p.Run(ctx, labHost(l, 1), []string{"sh", "-c", `echo "$SSH_CONNECTION"; hostname`}, RunOptions{})
	if err != nil {
		t.Fatalf("lab2 via lab1: %v", err)
	}
	f := strings.Fields(string(res.Stdout))
	// SSH_CONNECTION: the client of lab2's sshd is lab1.
	if len(f) != 5 || f[0] != l.Hosts[0].Addr || f[2] != l.Hosts[1].Addr || f[4] != l.Hosts[1].Name {
		t.Errorf("want a session on lab2 from lab1, got %q", res.Stdout)
	}
}

func TestE2E_Upload(t *testing.T) {
	l := lab.Start(t, 1)
	p := newPool(t, labConfig(l))
	h := labHost(l, 0)
	ctx := testCtx(t, 30*time.Second)
	const path = "/root/.capstan-e2e/apps/web/env/roles/web.env" // /root is private to the host
	content := make([]byte, 200<<10)
	for i := range content {
		content[i] = byte(i * 7)
	}
	if err := p.Upload(ctx, h, path, 0o600, content); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	sum := sha256.Sum256(content)
	out, err := l.Exec(ctx, 0, "sh", "-c", `stat -c %a "$1"; sha256sum < "$1"; ls -a "$(dirname "$1")" | wc -l`, "sh", path)
	if err != nil {
		t.Fatal(err)
	}
	want := "600\n" + hex.EncodeToString(sum[:]) + "  -\n3\n" // ., .. and the file: no temp left
	if out != want {
		t.Errorf("on lab1: %q, want %q", out, want)
	}

	// Atomic and not in the process list, observed on the host mid-upload.
	marker := "SECRET_MARKER_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	g := &gatedReader{first: []byte(marker + "-1-"), rest: []byte("2"), reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- p.upload(ctx, h, path, 0o600, g) }()
	<-g.reached
	time.Sleep(300 * time.Millisecond)
	ps, err := l.Exec(ctx, 0, "ps", "-eo", "args")
	if err != nil {
		t.Fatal(err)
	}
	mid, err := l.Exec(ctx, 0, "sha256sum", path)
	if err != nil {
		t.Fatal(err)
	}
	close(g.release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ps, marker) {
		t.Error("upload content visible in the host's process list")
	}
	if !strings.Contains(ps, ".web.env.capstan-") {
		t.Errorf("upload not in progress when ps ran; the check proves nothing:\n%s", ps)
	}
	if !strings.HasPrefix(mid, hex.EncodeToString(sum[:])) {
		t.Errorf("mid-upload the file changed: %s", mid)
	}
	final, _ := l.Exec(ctx, 0, "cat", path)
	if final != marker+"-1-2" {
		t.Errorf("final content %q", final)
	}
}

// randomArgv returns n random arguments biased toward shell metacharacters
// and invalid UTF-8.
func randomArgv(r *rand.Rand, n int) []string {
	const alphabet = "aZ9 '\"\\$`;&|<>(){}[]*?~#!=%^\n\t-_./:@,+"
	argv := make([]string, n)
	for i := range argv {
		var b []byte
		for range r.IntN(12) {
			switch r.IntN(10) {
			case 0:
				b = append(b, byte(1+r.IntN(255))) // any byte but NUL
			case 1:
				b = append(b, "$(id)"...)
			default:
				b = append(b, alphabet[r.IntN(len(alphabet))])
			}
		}
		argv[i] = string(b)
	}
	return argv
}

func TestE2E_QuotingThroughHostShell(t *testing.T) {
	l := lab.Start(t, 1)
	p := newPool(t, labConfig(l))
	h := labHost(l, 0)
	ctx := testCtx(t, 120*time.Second)
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 1))
	cases := [][]string{trickyArgs, {""}, {"", ""}}
	for range 150 {
		cases = append(cases, randomArgv(r, 1+r.IntN(6)))
	}
	for _, args := range cases {
		// Through the login shell (bash) into printf...
		if got := roundTripSSH(t, ctx, p, h, args); !slices.Equal(got, args) {
			t.Fatalf("seed %d: login shell: got %q, want %q", seed, got, args)
		}
		// ...and on into a real /bin/sh (dash) as "$@".
		res, err := p.Run(ctx, h, append([]string{"/bin/sh", "-c", `printf '%s\000' "$@"`, "sh"}, args...), RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := splitNUL(res.Stdout); !slices.Equal(got, args) {
			t.Fatalf("seed %d: /bin/sh: got %q, want %q", seed, got, args)
		}
	}
}

func TestE2E_CancelStopsRemoteCommand(t *testing.T) {
	l := lab.Start(t, 1)
	p := newPool(t, labConfig(l))
	h := labHost(l, 0)
	marker := "7" + strconv.Itoa(int(time.Now().UnixNano()%100000))
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, err := p.Run(ctx, h, []string{"sleep", marker}, RunOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, _ := l.Exec(testCtx(t, 5*time.Second), 0, "sh", "-c", "pgrep -f '^sleep "+marker+"$' || true")
		if strings.TrimSpace(out) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep %s still running on lab1 after cancel: %s", marker, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestE2E_DialDockerSocket(t *testing.T) {
	l := lab.Start(t, 1)
	p := newPool(t, labConfig(l))
	h := labHost(l, 0)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return p.Dial(ctx, h, "unix", "/var/run/docker.sock")
	}}}
	resp, err := hc.Get("http://docker/_ping")
	if err != nil {
		t.Fatalf("docker _ping through ssh: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, []byte("OK")) {
		t.Errorf("_ping = %q", body)
	}
}
