package hostexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/redact"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestPool_Run(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)

	res, err := p.Run(ctx, s.Host(), []string{"sh", "-c", "echo out; echo err >&2"}, RunOptions{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Errorf("stdout %q stderr %q", res.Stdout, res.Stderr)
	}

	res, err = p.Run(ctx, s.Host(), []string{"sh", "-c", "echo partial; echo boom >&2; exit 3"}, RunOptions{})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want *ExitError, got %v", err)
	}
	if ee.Code != 3 || string(ee.Stderr) != "boom\n" || ee.Host != "root@127.0.0.1:"+itoa(s.Port) {
		t.Errorf("ExitError = %+v", ee)
	}
	if string(res.Stdout) != "partial\n" {
		t.Errorf("stdout of failed command = %q", res.Stdout)
	}

	_, err = p.Run(ctx, s.Host(), []string{"sh", "-c", "kill -KILL $$"}, RunOptions{})
	if !errors.As(err, &ee) || ee.Signal != "KILL" || ee.Code != 137 {
		t.Errorf("killed command: want ExitError with signal KILL, got %#v", err)
	}

	res, err = p.Run(ctx, s.Host(), []string{"cat"}, RunOptions{Stdin: strings.NewReader("in put")})
	if err != nil || string(res.Stdout) != "in put" {
		t.Errorf("stdin round trip: %q, %v", res.Stdout, err)
	}

	env := map[string]string{"CAPSTAN_A": "it's $HOME `x`", "CAPSTAN_B": ""}
	res, err = p.Run(ctx, s.Host(), []string{"sh", "-c", `printf '%s|%s|%s' "$CAPSTAN_A" "$CAPSTAN_B" "${CAPSTAN_B-unset}"`}, RunOptions{Env: env})
	if err != nil || string(res.Stdout) != "it's $HOME `x`||" {
		t.Errorf("env: %q, %v", res.Stdout, err)
	}

	for _, bad := range [][]string{nil, {""}, {"echo", "a\x00b"}} {
		if _, err := p.Run(ctx, s.Host(), bad, RunOptions{}); !errors.Is(err, ErrInvalidArgv) {
			t.Errorf("argv %q: want ErrInvalidArgv, got %v", bad, err)
		}
	}
	if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{Env: map[string]string{"A-B": "x"}}); !errors.Is(err, ErrInvalidArgv) {
		t.Errorf("bad env name: want ErrInvalidArgv, got %v", err)
	}
}

func TestPool_QuotingOverSSH(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 60*time.Second)
	cases := [][]string{trickyArgs, {""}, {"a", "", "b"}}
	// The fuzz corpus too, so every crasher found locally is replayed over SSH.
	if ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzQuote")); err == nil {
		for _, e := range ents {
			data, _ := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzQuote", e.Name()))
			if raw, ok := fuzzCorpusString(data); ok {
				cases = append(cases, fuzzArgv(raw))
			}
		}
	}
	for _, args := range cases {
		got := roundTripSSH(t, ctx, p, s.Host(), args)
		if !slices.Equal(got, args) {
			t.Errorf("argv changed over ssh:\n got %q\nwant %q", got, args)
		}
	}
}

// roundTripSSH sends printArgs+args through the remote login shell and
// returns what printf received.
func roundTripSSH(t testing.TB, ctx context.Context, p *Pool, h Host, args []string) []string {
	t.Helper()
	res, err := p.Run(ctx, h, append(slices.Clone(printArgs), args...), RunOptions{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return splitNUL(res.Stdout)
}

// fuzzCorpusString decodes a one-string corpus file (`go test fuzz v1`).
func fuzzCorpusString(data []byte) (string, bool) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "string(") {
		return "", false
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	return s, err == nil
}

func TestPool_SecretsNeverOnCommandLine(t *testing.T) {
	s := startSSHD(t)
	const secret = "s3cr3t-T0ken"
	var logs bytes.Buffer
	cfg := s.Config()
	cfg.Redactor = redact.New(secret)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := newPool(t, cfg)
	ctx := testCtx(t, 20*time.Second)

	if _, err := p.Run(ctx, s.Host(), []string{"docker", "login", "-p", "x" + secret}, RunOptions{}); !errors.Is(err, ErrSecretOnCommandLine) {
		t.Errorf("secret in argv: want ErrSecretOnCommandLine, got %v", err)
	}
	if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{Env: map[string]string{"TOKEN": secret}}); !errors.Is(err, ErrSecretOnCommandLine) {
		t.Errorf("secret in env: want ErrSecretOnCommandLine, got %v", err)
	}
	// Over stdin it is fine; echoed to stderr it is masked in the error but
	// kept raw in the Result.
	res, err := p.Run(ctx, s.Host(), []string{"sh", "-c", "cat >&2; exit 1"}, RunOptions{Stdin: strings.NewReader("token " + secret)})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want ExitError, got %v", err)
	}
	if strings.Contains(string(ee.Stderr), secret) || strings.Contains(ee.Error(), secret) || !strings.Contains(string(ee.Stderr), redact.Mask) {
		t.Errorf("ExitError must mask the secret: %q / %q", ee.Stderr, ee.Error())
	}
	if string(res.Stderr) != "token "+secret {
		t.Errorf("Result.Stderr must be the raw output, got %q", res.Stderr)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("secret in logs:\n%s", logs.String())
	}
}

// A short secret is refused as a whole argument or env value, or as a
// delimited token in one, and allowed inside words ("proxy", host names).
func TestPool_ShortSecretOnCommandLine(t *testing.T) {
	p := &Pool{red: redact.New("x")}
	for _, tc := range []struct {
		argv    []string
		env     map[string]string
		refused bool
	}{
		{argv: []string{"docker", "login", "-p", "x"}, refused: true},
		{argv: []string{"sh", "-c", "echo PASSWORD=x"}, refused: true},
		{argv: []string{"true"}, env: map[string]string{"TOKEN": "x"}, refused: true},
		{argv: []string{"docker", "run", "--name", "kamal-proxy", "x.example/app:v1"}},
		{argv: []string{"true"}, env: map[string]string{"HOST": "x-ray.example"}},
	} {
		_, err := p.commandLine(tc.argv, tc.env, "")
		if refused := errors.Is(err, ErrSecretOnCommandLine); refused != tc.refused {
			t.Errorf("%q %v: refused=%v (%v), want %v", tc.argv, tc.env, refused, err, tc.refused)
		}
	}
}

func TestPool_LogsAndStats(t *testing.T) {
	s := startSSHD(t)
	var logs syncBuffer
	cfg := s.Config()
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := newPool(t, cfg)
	ctx := testCtx(t, 20*time.Second)
	p.Run(ctx, s.Host(), []string{"echo", "hello world"}, RunOptions{Stdin: strings.NewReader("12345")})
	p.Run(ctx, s.Host(), []string{"sh", "-c", "exit 4"}, RunOptions{})

	var found int
	sc := bufio.NewScanner(bytes.NewReader(logs.Bytes()))
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"msg":"ssh command"`) {
			continue
		}
		found++
		for _, k := range []string{`"host":"root@127.0.0.1:` + itoa(s.Port) + `"`, `"duration":`, `"level":"DEBUG"`} {
			if !strings.Contains(line, k) {
				t.Errorf("log line lacks %s: %s", k, line)
			}
		}
	}
	if found != 2 || !strings.Contains(string(logs.Bytes()), `"argv":"echo 'hello world'","duration"`) ||
		!strings.Contains(string(logs.Bytes()), `"exit":4`) {
		t.Errorf("want 2 command lines with argv and exit codes, got:\n%s", logs.Bytes())
	}
	st := p.Stats()["root@127.0.0.1:"+itoa(s.Port)]
	want := HostStats{Commands: 2, Failures: 1, BytesIn: uint64(len("hello world\n")), BytesOut: 5, Dials: 1}
	if st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
}

func TestPool_CancelStopsRemoteCommand(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	marker := fmt.Sprintf("%d.%d", 1000+s.Port%1000, time.Now().UnixNano()%1000)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Run(ctx, s.Host(), []string{"sleep", marker}, RunOptions{})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	if took > 500*time.Millisecond+cancelGrace {
		t.Errorf("cancel took %v", took)
	}
	// The remote sleep got SIGTERM (the session's process is on this machine).
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-f", "sleep "+marker).Output()
		if len(bytes.TrimSpace(out)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote command still running after cancel: pids %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The connection is still usable.
	if _, err := p.Run(testCtx(t, 10*time.Second), s.Host(), []string{"true"}, RunOptions{}); err != nil {
		t.Errorf("after cancel: %v", err)
	}
}

func TestPool_ReusesOneConnection(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 60*time.Second)
	for i := range 200 {
		if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{}); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		if i == 100 {
			if n := s.established(t); n != 1 {
				t.Fatalf("after 100 commands: %d TCP connections to sshd, want 1", n)
			}
		}
	}
	if n := s.established(t); n != 1 {
		t.Errorf("%d TCP connections to sshd, want 1", n)
	}
	if st := p.Stats()[s.Host().String()]; st.Dials != 1 || st.Commands != 200 {
		t.Errorf("Stats = %+v, want 1 dial and 200 commands", st)
	}
}

func TestPool_ConcurrentCommandsOneHost(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 60*time.Second)
	// More than sshd's MaxSessions (10): the pool queues the rest.
	var wg sync.WaitGroup
	errs := make(chan error, 25)
	for i := range 25 {
		wg.Go(func() {
			res, err := p.Run(ctx, s.Host(), []string{"sh", "-c", "sleep 0.2; echo " + itoa(i)}, RunOptions{})
			if err == nil && string(res.Stdout) != itoa(i)+"\n" {
				err = fmt.Errorf("command %d: stdout %q", i, res.Stdout)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if st := p.Stats()[s.Host().String()]; st.Dials != 1 {
		t.Errorf("concurrent first use must share one dial, got %d", st.Dials)
	}
}

func TestPool_SSHDKilledMidCommand(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 30*time.Second)
	if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx, s.Host(), []string{"sleep", "20"}, RunOptions{})
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	s.Stop()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("want ErrConnectionLost, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after sshd was killed")
	}
	// While sshd is down: unreachable, promptly.
	if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("sshd down: want ErrUnreachable, got %v", err)
	}
	s.Start()
	if _, err := p.Run(ctx, s.Host(), []string{"true"}, RunOptions{}); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if st := p.Stats()[s.Host().String()]; st.Dials != 3 || st.DialFailures != 1 {
		t.Errorf("Stats = %+v, want 3 dials, 1 failed", st)
	}
}

// blackhole accepts TCP connections and never says anything, like a host
// whose sshd hangs or a firewall that swallows the handshake.
func blackhole(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func TestPool_UnreachableHostFailsWithinDeadline(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	dead := Host{Addr: "127.0.0.1", Port: blackhole(t)}
	refused := Host{Addr: "127.0.0.1", Port: freePort(t)}

	var wg sync.WaitGroup
	var deadErr, refusedErr, goodErr error
	var deadTook time.Duration
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, deadErr = p.Run(ctx, dead, []string{"true"}, RunOptions{})
		deadTook = time.Since(start)
	})
	wg.Go(func() {
		_, refusedErr = p.Run(testCtx(t, 5*time.Second), refused, []string{"true"}, RunOptions{})
	})
	wg.Go(func() {
		time.Sleep(100 * time.Millisecond) // while the dead host hangs
		for range 5 {
			if _, goodErr = p.Run(testCtx(t, 5*time.Second), s.Host(), []string{"true"}, RunOptions{}); goodErr != nil {
				return
			}
		}
	})
	wg.Wait()
	if !errors.Is(deadErr, ErrUnreachable) || !errors.Is(deadErr, context.DeadlineExceeded) {
		t.Errorf("hanging host: want ErrUnreachable and DeadlineExceeded, got %v", deadErr)
	}
	if deadTook > 1500*time.Millisecond {
		t.Errorf("hanging host took %v for a 700ms deadline", deadTook)
	}
	if !errors.Is(refusedErr, ErrUnreachable) {
		t.Errorf("refused port: want ErrUnreachable, got %v", refusedErr)
	}
	if goodErr != nil {
		t.Errorf("healthy host affected: %v", goodErr)
	}
}

func TestPool_ParallelHostsWithinDialBound(t *testing.T) {
	hosts := []*testSSHD{startSSHD(t), startSSHD(t), startSSHD(t)}
	cfg := hosts[0].Config()
	cfg.MaxDials = 2
	cfg.Keys = nil
	for _, s := range hosts {
		cfg.Keys = append(cfg.Keys, s.Identity)
		cfg.KnownHosts = append(cfg.KnownHosts, s.KnownHosts)
	}
	p := newPool(t, cfg)
	var inflight, peak int
	var mu sync.Mutex
	p.testHookDial = func(delta int) {
		mu.Lock()
		inflight += delta
		peak = max(peak, inflight)
		mu.Unlock()
	}
	ctx := testCtx(t, 30*time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	for i, s := range hosts {
		wg.Go(func() { _, errs[i] = p.Run(ctx, s.Host(), []string{"sleep", "1"}, RunOptions{}) })
	}
	wg.Wait()
	took := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Errorf("host %d: %v", i, err)
		}
	}
	// The peak proves the hosts were dialled in parallel, up to the bound
	// (no wall-clock assertion: this machine may be loaded).
	t.Logf("3 × sleep 1 took %v", took)
	if peak != 2 {
		t.Errorf("peak concurrent dials = %d, want exactly the bound 2", peak)
	}
}

func TestPool_ProxyJump(t *testing.T) {
	jump, target := startSSHD(t), startSSHD(t)
	cfg := target.Config()
	cfg.Keys = []string{target.Identity, jump.Identity}
	cfg.KnownHosts = []string{target.KnownHosts, jump.KnownHosts}
	cfg.Proxy = "root@127.0.0.1:" + itoa(jump.Port) // deploy.yml ssh.proxy
	p := newPool(t, cfg)
	ctx := testCtx(t, 20*time.Second)
	res, err := p.Run(ctx, target.Host(), []string{"sh", "-c", `echo "$SSH_CONNECTION"`}, RunOptions{})
	if err != nil {
		t.Fatalf("Run via jump: %v", err)
	}
	// SSH_CONNECTION = client_ip client_port server_ip server_port. The
	// client socket must belong to the jump host's sshd, not to this test.
	f := strings.Fields(string(res.Stdout))
	if len(f) != 4 || f[3] != itoa(target.Port) {
		t.Fatalf("SSH_CONNECTION = %q", res.Stdout)
	}
	out, err := exec.Command("ss", "-tnpH", "state", "established", "( sport = :"+f[1]+" )").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"sshd`) || strings.Contains(string(out), fmt.Sprintf("pid=%d,", os.Getpid())) {
		t.Errorf("target's client socket is not owned by the jump sshd: %s", out)
	}
	resolved, err := p.Resolve(target.Host())
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st[resolved.String()].Dials != 1 || st["root@127.0.0.1:"+itoa(jump.Port)].Dials != 1 {
		t.Errorf("want one dial each to target and jump, Stats = %+v", st)
	}
	// Unknown target key through a good jump: still refused.
	cfg.KnownHosts = []string{jump.KnownHosts}
	p2 := newPool(t, cfg)
	if _, err := p2.Run(ctx, target.Host(), []string{"true"}, RunOptions{}); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("unknown target via jump: want ErrUnknownHost, got %v", err)
	}
}

func TestPool_Upload(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir() // /tmp is shared with the sshd's mount namespace
	target := filepath.Join(dir, "a", "b", "secret.env")
	content := []byte("KEY=value with 'quotes' and $dollar\n\x00\xff binary\n")
	if err := p.Upload(ctx, s.Host(), target, 0o600, content); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	got, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("content = %q, %v", got, err)
	}
	fi, _ := os.Stat(target)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	if err := p.Upload(ctx, s.Host(), target, 0o644, []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "v2" {
		t.Errorf("overwrite: %q", got)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode after overwrite = %v, want 0644", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(filepath.Dir(target))
	if len(ents) != 1 {
		t.Errorf("temp files left behind: %v", ents)
	}
	// A path under a file cannot be created: ExitError, no temp left.
	if err := p.Upload(ctx, s.Host(), filepath.Join(target, "x"), 0o600, []byte("x")); !errors.As(err, new(*ExitError)) {
		t.Errorf("impossible path: want ExitError, got %v", err)
	}
}

// gatedReader returns first, then blocks until release is closed, then
// returns rest.
type gatedReader struct {
	first, rest []byte
	reached     chan struct{}
	release     chan struct{}
	state       int
}

func (g *gatedReader) Read(b []byte) (int, error) {
	switch g.state {
	case 0:
		g.state = 1
		return copy(b, g.first), nil
	case 1:
		close(g.reached)
		<-g.release
		g.state = 2
		return copy(b, g.rest), nil
	default:
		return 0, io.EOF
	}
}

func TestPool_UploadIsAtomicAndNotInProcessList(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)
	target := filepath.Join(t.TempDir(), "app.env")
	os.WriteFile(target, []byte("old"), 0o600)
	marker := "SECRET_MARKER_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	g := &gatedReader{first: []byte(marker + "-part1-"), rest: []byte("part2"), reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- p.upload(ctx, s.Host(), target, 0o600, g) }()
	<-g.reached
	time.Sleep(200 * time.Millisecond) // let the first half reach the remote temp file
	// Mid-upload: readers still see the old file, the content is in no
	// process's command line, and the remote side is really writing.
	if got, _ := os.ReadFile(target); string(got) != "old" {
		t.Errorf("mid-upload the target reads %q, want the old content", got)
	}
	ps, err := exec.Command("ps", "-eo", "args").Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ps, []byte(marker)) {
		t.Errorf("upload content visible in the process list")
	}
	if !bytes.Contains(ps, []byte(filepath.Base(target)+".capstan-")) {
		t.Errorf("upload script not found in the process list; the check above proves nothing:\n%s", ps)
	}
	close(g.release)
	if err := <-errc; err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got, _ := os.ReadFile(target); string(got) != marker+"-part1-part2" {
		t.Errorf("final content %q", got)
	}
}

func TestPool_Stream(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- p.Stream(ctx, s.Host(), []string{"sh", "-c", "echo one; sleep 1; echo two; echo bad >&2; exit 2"}, pw, nil, RunOptions{})
		pw.Close()
	}()
	r := bufio.NewReader(pr)
	line, _ := r.ReadString('\n')
	if line != "one\n" {
		t.Errorf("first line %q", line)
	}
	select {
	case err := <-errc:
		t.Fatalf("first line arrived only after the command ended (%v): not streamed", err)
	default:
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "two\n" {
		t.Errorf("rest = %q", rest)
	}
	var ee *ExitError
	if err := <-errc; !errors.As(err, &ee) || ee.Code != 2 || string(ee.Stderr) != "bad\n" {
		t.Errorf("want ExitError 2 with stderr, got %v", err)
	}
}

func TestPool_Dial(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return p.Dial(ctx, s.Host(), network, addr)
	}}}
	resp, err := hc.Get(srv.URL + "/up")
	if err != nil {
		t.Fatalf("GET through ssh: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "up" {
		t.Errorf("body %q", body)
	}

	sock := filepath.Join(t.TempDir(), "echo.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := p.Dial(ctx, s.Host(), "unix", sock)
	if err != nil {
		t.Fatalf("Dial unix: %v", err)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("unix echo: %q, %v", buf, err)
	}
	c.Close()

	if _, err := p.Dial(ctx, s.Host(), "tcp", "127.0.0.1:"+itoa(freePort(t))); err == nil {
		t.Error("Dial to a closed port must fail")
	}
	if _, err := p.Dial(ctx, s.Host(), "udp", "127.0.0.1:53"); !errors.Is(err, ErrInvalidArgv) {
		t.Errorf("udp: want ErrInvalidArgv, got %v", err)
	}
	if st := p.Stats()[s.Host().String()]; st.Dials != 1 {
		t.Errorf("Dial must reuse the pooled connection; dials = %d", st.Dials)
	}
}

func TestPool_Closed(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	p.Close()
	if _, err := p.Run(testCtx(t, 5*time.Second), s.Host(), []string{"true"}, RunOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("want ErrClosed, got %v", err)
	}
}

func TestExitError_MessageIsTrimmed(t *testing.T) {
	long := strings.Repeat("x", 2000) + "the last words"
	e := &ExitError{Host: "h", Argv: []string{"cmd"}, Code: 2, Stderr: []byte(long + "\n\n")}
	msg := e.Error()
	if len(msg) > maxStderrInMessage+100 || !strings.HasSuffix(msg, "the last words") {
		t.Errorf("message not trimmed to the tail: %d bytes, ends %q", len(msg), msg[len(msg)-20:])
	}
	sig := &ExitError{Host: "h", Argv: []string{"cmd"}, Code: 143, Signal: "TERM"}
	if !strings.Contains(sig.Error(), "signal TERM") {
		t.Errorf("signal not named: %s", sig.Error())
	}
}

// Pools sharing a DialLimit dial within it together: two pools, a host
// each, one dial at a time in all.
func TestPool_SharedDialLimit(t *testing.T) {
	hosts := []*testSSHD{startSSHD(t), startSSHD(t)}
	limit := NewDialLimit(1)
	var inflight, peak int
	var mu sync.Mutex
	hook := func(delta int) {
		mu.Lock()
		inflight += delta
		peak = max(peak, inflight)
		mu.Unlock()
	}
	ctx := testCtx(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	for i, s := range hosts {
		cfg := s.Config()
		cfg.Dials = limit
		p := newPool(t, cfg)
		p.testHookDial = hook
		wg.Go(func() { _, errs[i] = p.Run(ctx, s.Host(), []string{"true"}, RunOptions{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("host %d: %v", i, err)
		}
	}
	if peak != 1 {
		t.Errorf("peak concurrent dials over two pools = %d, want the shared bound 1", peak)
	}
}
