package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// logHosts is scriptedHosts that also answers `docker logs` with each
// container's canned output (by ID), and records the logs argv it ran.
type logHosts struct {
	scriptedHosts
	logs map[string]string
	mu   sync.Mutex
	ran  []string
}

func (l *logHosts) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	if len(argv) > 2 && strings.Contains(argv[2], "docker logs") {
		l.mu.Lock()
		l.ran = append(l.ran, host+": "+strings.Join(argv[4:], " "))
		l.mu.Unlock()
		id := argv[len(argv)-1]
		if out, ok := l.logs[id]; ok {
			return []byte(out), nil
		}
		return []byte("Error response from daemon: No such container: " + id + "\n"), &ExitError{Host: host, Code: 1, Err: errors.New("exit status 1")}
	}
	return l.scriptedHosts.Run(ctx, host, argv, stdin)
}

// logsApp is testApp's v2 on its three hosts: web runs v2 on 10.0.0.1
// (v1 stopped beside it) and v1 on 10.0.0.2; worker runs v2.
func logsApp(t *testing.T) (*App, *logHosts) {
	a := testApp(t, "v2")
	old := running(a, "10.0.0.1", "web", "v1")
	old.State = "exited"
	h := &logHosts{scriptedHosts: scriptedHosts{t: t, containers: map[string][]Container{
		"10.0.0.1": {running(a, "10.0.0.1", "web", "v2"), old},
		"10.0.0.2": {running(a, "10.0.0.2", "web", "v1")},
		"10.0.0.3": {running(a, "10.0.0.3", "worker", "v2")},
	}}}
	a.SSH = h
	a.Redact = func(s string) string { return strings.ReplaceAll(s, "s3cret-value", "[REDACTED]") }
	return a, h
}

func TestLogs_MergedByTimestampPrefixedAndMasked(t *testing.T) {
	a, h := logsApp(t)
	h.logs = map[string]string{
		"id-testapp-web-v2":    "2026-11-29T10:00:01.000000000Z web1 first\n2026-11-29T10:00:04.000000000Z web1 SECRET_KEY=s3cret-value\n",
		"id-testapp-web-v1":    "2026-11-29T10:00:02.500000000Z web2 second\n",
		"id-testapp-worker-v2": "2026-11-29T10:00:03.000000000Z worker third\nError: no timestamp\n",
		"id-testapp-web-v1-x":  "never read: the stopped v1 on 10.0.0.1 is not current\n",
	}
	var out strings.Builder
	if err := a.Logs(context.Background(), LogOptions{Lines: 50, Since: 10 * time.Minute}, &out); err != nil {
		t.Fatal(err)
	}
	want := `10.0.0.1 web | web1 first
10.0.0.2 web | web2 second
10.0.0.3 worker | worker third
10.0.0.3 worker | Error: no timestamp
10.0.0.1 web | web1 SECRET_KEY=[REDACTED]
`
	if out.String() != want {
		t.Errorf("logs:\n%s\nwant:\n%s", out.String(), want)
	}
	slices.Sort(h.ran)
	wantRan := []string{
		"10.0.0.1: --timestamps --tail 50 --since 10m0s id-testapp-web-v2",
		"10.0.0.2: --timestamps --tail 50 --since 10m0s id-testapp-web-v1",
		"10.0.0.3: --timestamps --tail 50 --since 10m0s id-testapp-worker-v2",
	}
	if !slices.Equal(h.ran, wantRan) {
		t.Errorf("ran:\n%s\nwant:\n%s", strings.Join(h.ran, "\n"), strings.Join(wantRan, "\n"))
	}
}

func TestLogs_TimestampsGrepAndSelection(t *testing.T) {
	a, h := logsApp(t)
	h.logs = map[string]string{
		"id-testapp-web-v2": "2026-11-29T10:00:01.5Z GET / 200\n2026-11-29T10:00:04Z SECRET_KEY=s3cret-value\n",
		"id-testapp-web-v1": "2026-11-29T10:00:02Z GET /up 200\n",
	}
	var out strings.Builder
	// The filter sees the masked text: the secret cannot be grepped for.
	err := a.Logs(context.Background(), LogOptions{Roles: []string{"web"}, Timestamps: true, Grep: regexp.MustCompile(`GET|s3cret`)}, &out)
	if err != nil {
		t.Fatal(err)
	}
	want := "10.0.0.1 web | 2026-11-29T10:00:01.5Z GET / 200\n10.0.0.2 web | 2026-11-29T10:00:02Z GET /up 200\n"
	if out.String() != want {
		t.Errorf("logs:\n%s\nwant:\n%s", out.String(), want)
	}
	for _, r := range h.ran {
		if !strings.Contains(r, "--tail all id-") || strings.Contains(r, "--since") {
			t.Errorf("ran %q: want all lines, no --since", r)
		}
	}
}

func TestLogs_UnreachableHostIsReportedOthersGoOn(t *testing.T) {
	a, h := logsApp(t)
	h.down = map[string]bool{"10.0.0.2": true}
	h.logs = map[string]string{
		"id-testapp-web-v2":    "2026-11-29T10:00:01Z one\n",
		"id-testapp-worker-v2": "2026-11-29T10:00:02Z two\n",
	}
	var warned []string
	var mu sync.Mutex
	warn := func(host string, err error) { mu.Lock(); warned = append(warned, host+": "+err.Error()); mu.Unlock() }
	var out strings.Builder
	if err := a.Logs(context.Background(), LogOptions{Warn: warn}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "10.0.0.1 web | one\n10.0.0.3 worker | two\n" {
		t.Errorf("logs:\n%s", out.String())
	}
	if len(warned) != 1 || !strings.HasPrefix(warned[0], "10.0.0.2: ") || !strings.Contains(warned[0], "no route to host") {
		t.Errorf("warnings %q, want one for 10.0.0.2", warned)
	}
}

func TestLogs_UnknownRoleOrHost(t *testing.T) {
	a, _ := logsApp(t)
	for _, o := range []LogOptions{{Roles: []string{"nope"}}, {Hosts: []string{"10.9.9.9"}}} {
		if err := a.Logs(context.Background(), o, io.Discard); !errors.Is(err, ErrUnknownTarget) {
			t.Errorf("Logs(%+v): %v, want ErrUnknownTarget", o, err)
		}
	}
}

func TestLogsArgv(t *testing.T) {
	got := logsArgv("abc", logArgs{tail: 5, since: "1700000000.000000001", follow: true})
	want := []string{"sh", "-c", `exec docker logs "$@" 2>&1`, "sh", "--timestamps", "--tail", "5", "--since", "1700000000.000000001", "--follow", "abc"}
	if !slices.Equal(got, want) {
		t.Errorf("argv %q, want %q", got, want)
	}
	if got := unixArg(time.Unix(1700000000, 5)); got != "1700000000.000000005" {
		t.Errorf("unixArg: %q", got)
	}
}

func TestLogMask_MultiLineSecretLineByLine(t *testing.T) {
	fsys := fstest.MapFS{
		"config/deploy.yml": {Data: []byte(testDeploy)},
		".kamal/secrets":    {Data: []byte("REGISTRY_PASSWORD=pw\nSECRET_KEY=\"-----BEGIN KEY-----\nAAAAline-one-of-key\nBBBBline-two-of-key\n-----END KEY-----\"\n")},
	}
	cfg, err := kamal.Load(fsys, kamal.LoadOptions{Version: "v1", FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	red := redact.New(cfg.SecretValues()...)
	a := &App{Config: cfg, Redact: red.String}
	mask := a.logMask()
	for _, in := range []string{"AAAAline-one-of-key", "got BBBBline-two-of-key!", "-----BEGIN KEY-----"} {
		if got := mask(in); strings.Contains(got, "line-") || strings.Contains(got, "BEGIN") {
			t.Errorf("mask(%q) = %q", in, got)
		}
	}
	if got := mask("a plain line"); got != "a plain line" {
		t.Errorf("mask changed a plain line: %q", got)
	}
}

// streamScript is a fake Streamer and lookup for the follower: each
// container's stream writes its chunks, then ends (or, for a container in
// block, waits for ctx).
type streamScript struct {
	mu      sync.Mutex
	chunks  map[string][]string // by container ID
	block   map[string]bool
	current []*Container // what successive lookups return (the last one repeats)
	argv    []string
}

func (s *streamScript) stream(ctx context.Context, host string, argv []string, w io.Writer) error {
	id := argv[len(argv)-1]
	s.mu.Lock()
	s.argv = append(s.argv, strings.Join(argv[4:], " "))
	chunks, block := s.chunks[id], s.block[id]
	s.mu.Unlock()
	for _, c := range chunks {
		if _, err := io.WriteString(w, c); err != nil {
			return err
		}
	}
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *streamScript) lookup(ctx context.Context, host, role string) (*Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.current[0]
	if len(s.current) > 1 {
		s.current = s.current[1:]
	}
	if c != nil && c.ID == "unreachable" {
		return nil, fmt.Errorf("observe %s: %w", host, ErrUnreachable)
	}
	return c, nil
}

type chanWriter chan string

func (c chanWriter) Write(p []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if l != "" {
			c <- l
		}
	}
	return len(p), nil
}

// TestFollower_FollowsTheNextContainer: the followed container restarts
// (its stream ends; the lookup finds it again: on from its last line,
// nothing written twice), the host is unreachable once, no container runs
// for a moment, then a redeploy's new container is followed, said in a
// line of capstan's own.
func TestFollower_FollowsTheNextContainer(t *testing.T) {
	got := make(chanWriter, 100)
	s := &streamScript{
		chunks: map[string][]string{
			"A": {"2026-11-29T10:00:01Z a1\n2026-11-29T10:00:02Z a", "2 s3cret-value\n", "2026-11-29T10:00:03Z a3 partial"},
			"B": {"2026-11-29T10:00:04Z b1\n"},
		},
		block: map[string]bool{"B": true},
		current: []*Container{
			{ID: "A", Name: "app-web-v1"},
			{ID: "unreachable"},
			nil,
			{ID: "B", Name: "app-web-v2"},
		},
	}
	// After the restart A writes its old lines again (docker --since is
	// inclusive) and one new one.
	restarted := []string{"2026-11-29T10:00:02Z a2 s3cret-value\n2026-11-29T10:00:03Z a3 partial\n2026-11-29T10:00:03.5Z a4\n"}
	var warned []string
	var wmu sync.Mutex
	f := &follower{
		stream: func(ctx context.Context, host string, argv []string, w io.Writer) error {
			s.mu.Lock()
			if len(s.argv) == 1 {
				s.chunks["A"] = restarted
			}
			s.mu.Unlock()
			return s.stream(ctx, host, argv, w)
		},
		lookup: s.lookup,
		out:    &logOut{w: got, mask: func(x string) string { return strings.ReplaceAll(x, "s3cret-value", "[REDACTED]") }},
		warn:   func(host string, err error) { wmu.Lock(); warned = append(warned, host+": "+err.Error()); wmu.Unlock() },
		pause:  time.Millisecond,
		now:    func() time.Time { return time.Unix(1700000000, 0) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.follow(ctx, LogTarget{Host: "h1", Role: "web", ID: "A", Name: "app-web-v1"}, logArgs{tail: 10})
	}()
	want := []string{
		"h1 web | a1\n",
		"h1 web | a2 [REDACTED]\n",
		"h1 web | a3 partial\n",
		"h1 web | a4\n",
		"h1 web | capstan: no web container runs; waiting for one\n",
		"h1 web | capstan: now following app-web-v2 (app-web-v1 stopped)\n",
		"h1 web | b1\n",
	}
	var lines []string
	for len(lines) < len(want) {
		select {
		case l := <-got:
			lines = append(lines, l)
		case <-time.After(5 * time.Second):
			t.Fatalf("lines so far:\n%s", strings.Join(lines, ""))
		}
	}
	cancel()
	<-done
	if !slices.Equal(lines, want) {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, ""), strings.Join(want, ""))
	}
	wantArgv := []string{
		"--timestamps --tail 10 --follow A",
		"--timestamps --tail all --since " + unixArg(time.Date(2026, 11, 29, 10, 0, 3, 0, time.UTC)) + " --follow A",
		"--timestamps --tail all --since 1700000000.000000000 --follow B",
	}
	if !slices.Equal(s.argv, wantArgv) {
		t.Errorf("argv:\n%s\nwant:\n%s", strings.Join(s.argv, "\n"), strings.Join(wantArgv, "\n"))
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "unreachable") {
		t.Errorf("warnings %q, want the unreachable host once", warned)
	}
	select {
	case l := <-got:
		t.Errorf("a line after the end: %q", l)
	default:
	}
}

// TestFollower_WaitsForAFirstContainer: a role that ran no container (or
// whose host did not answer) when the follow started is followed once one
// runs, from when the follow started.
func TestFollower_WaitsForAFirstContainer(t *testing.T) {
	got := make(chanWriter, 10)
	s := &streamScript{
		chunks:  map[string][]string{"C": {"2026-11-29T10:00:01Z c1\n"}},
		block:   map[string]bool{"C": true},
		current: []*Container{nil, {ID: "C", Name: "app-worker-v3"}},
	}
	f := &follower{stream: s.stream, lookup: s.lookup, out: &logOut{w: got, mask: func(x string) string { return x }},
		warn: func(string, error) {}, pause: time.Millisecond, now: func() time.Time { return time.Unix(1700000000, 0) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.follow(ctx, LogTarget{Host: "h3", Role: "worker"}, logArgs{tail: 10})
	}()
	want := []string{
		"h3 worker | capstan: no worker container runs; waiting for one\n",
		"h3 worker | capstan: now following app-worker-v3\n",
		"h3 worker | c1\n",
	}
	var lines []string
	for len(lines) < len(want) {
		select {
		case l := <-got:
			lines = append(lines, l)
		case <-time.After(5 * time.Second):
			t.Fatalf("lines so far:\n%s", strings.Join(lines, ""))
		}
	}
	cancel()
	<-done
	if !slices.Equal(lines, want) || len(s.argv) != 1 || s.argv[0] != "--timestamps --tail all --since 1700000000.000000000 --follow C" {
		t.Errorf("lines:\n%s\nargv %q", strings.Join(lines, ""), s.argv)
	}
}
