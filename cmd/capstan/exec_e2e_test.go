package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// capstanIO runs the CLI in the app directory with stdin and ctx and
// returns its stdout and stderr apart, with the exit status. Only stderr,
// capstan's own logs, goes through the secrets audit: exec's stdout is
// the operator's, who may ask for a secret.
func (a *e2eApp) capstanIO(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) (stderr string, code int) {
	a.t.Helper()
	a.t.Chdir(a.dir)
	for k, v := range a.env {
		a.t.Setenv(k, v)
	}
	var errb bytes.Buffer
	err := runStdio(ctx, args, stdin, stdout, &errb)
	code = exitCode(err, &errb)
	if testing.Verbose() {
		a.t.Logf("capstan %s: exit %d\n%s", strings.Join(args, " "), code, errb.String())
	}
	auditSecrets(a.t, "the logs of capstan "+strings.Join(args, " "), errb.Bytes())
	return errb.String(), code
}

// deployUnique pushes a testapp tag no host has (its /release file holds
// the tag; its binary has this tree's tools: env, exit, cat, tty), applies
// it, then puts the configuration back to v1 without applying: the hosts
// run a version the configuration no longer names.
func (a *e2eApp) deployUnique(prefix string) string {
	a.t.Helper()
	tag := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := a.l.PushUniqueTestapp(ctx, tag); err != nil {
		a.t.Fatal(err)
	}
	a.configure(tag, "", "")
	a.mustApply()
	a.configure("v1", "", "")
	return tag
}

// TestE2EExec: `capstan exec` starts a one-off container of the running
// version (not the configuration's) with the role's env file, prints the
// command's output (a secret included) prefixed by host, keeps the
// secret out of its logs even at debug level, exits with the worst
// status, rewrites a missing env file, and with --reuse runs in the live
// container.
func TestE2EExec(t *testing.T) {
	a := newE2EApp(t, 3)
	tag := a.deployUnique("oneoff")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	web0, web1 := a.l.Hosts[0].Addr, a.l.Hosts[1].Addr
	debug := []string{"--log-level", "debug", "--log-format", "json", "exec"}

	var out bytes.Buffer
	logs, code := a.capstanIO(ctx, nil, &out, append(debug, "-r", "web", "--", "env", "SECRET_KEY")...)
	if code != 0 {
		t.Fatalf("exec env SECRET_KEY: exit %d\n%s", code, logs)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	slices.Sort(lines)
	if want := []string{web0 + ": s3cret-value-1", web1 + ": s3cret-value-1"}; !slices.Equal(lines, want) {
		t.Errorf("stdout %q, want %q: the value, once per web host, prefixed", out.String(), want)
	}
	for _, want := range []string{`"msg":"ssh command"`, `docker run --rm --name testapp-web-exec-` + tag + "-", "--env-file .kamal/apps/testapp/env/roles/web.env", `"version":"` + tag + `"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("debug logs lack %q (the secret check needs the real debug logs):\n%s", want, logs)
		}
	}

	// The image is the running version's, not the configuration's v1.
	out.Reset()
	if _, code := a.capstanIO(ctx, nil, &out, "exec", "--hosts", web0, "--", "cat", "/release"); code != 0 || out.String() != tag+"\n" {
		t.Errorf("cat /release: exit %d, %q, want %q (unprefixed: one host)", code, out.String(), tag+"\n")
	}

	// -e, and the worst exit status across hosts, each host's named.
	out.Reset()
	if _, code := a.capstanIO(ctx, nil, &out, "exec", "--hosts", web0, "-e", "FOO=bar baz", "--", "env", "FOO"); code != 0 || out.String() != "bar baz\n" {
		t.Errorf("-e FOO: exit %d, %q", code, out.String())
	}
	logs, code = a.capstanIO(ctx, nil, io.Discard, "exec", "--", "exit", "3")
	if code != 3 || !strings.Contains(logs, web1+" (web): exit status 3") || !strings.Contains(logs, a.l.Hosts[2].Addr+" (worker): exit status 3") {
		t.Errorf("exit 3 on every host: exit %d\n%s", code, logs)
	}

	// A missing env file is written as the boot writes it.
	a.sh(0, "rm /root/.kamal/apps/testapp/env/roles/web.env")
	out.Reset()
	if _, code := a.capstanIO(ctx, nil, &out, "exec", "-r", "web", "--primary", "--", "env", "SECRET_KEY"); code != 0 || out.String() != "s3cret-value-1\n" {
		t.Errorf("exec without the env file: exit %d, %q", code, out.String())
	}
	if mode := a.sh(0, "stat -c %a /root/.kamal/apps/testapp/env/roles/web.env"); mode != "600" {
		t.Errorf("env file rewritten with mode %s", mode)
	}

	// No one-off container is left behind.
	for i := range 3 {
		if left := a.sh(i, "docker ps -aq --filter name=-exec-"); left != "" {
			t.Errorf("%s: exec containers left: %s", a.l.Hosts[i].Name, left)
		}
	}

	// --reuse runs in the live container: only it has KAMAL_CONTAINER_NAME.
	out.Reset()
	if _, code := a.capstanIO(ctx, nil, &out, "exec", "--reuse", "--hosts", web1, "--", "/testapp", "env", "KAMAL_CONTAINER_NAME"); code != 0 || out.String() != "testapp-web-"+tag+"\n" {
		t.Errorf("--reuse: exit %d, %q", code, out.String())
	}

	// --detach leaves the container, named like Kamal's, and prints its ID.
	out.Reset()
	if _, code := a.capstanIO(ctx, nil, &out, "exec", "--detach", "--hosts", web0, "--", "exit", "0"); code != 0 {
		t.Fatalf("--detach: exit %d", code)
	}
	id := strings.TrimSpace(out.String())
	if name := a.sh(0, "docker inspect -f '{{.Name}}' "+id); !strings.HasPrefix(name, "/testapp-web-exec-"+tag+"-") {
		t.Errorf("--detach: container %q named %q", id, name)
	}
	a.sh(0, "docker rm -f "+id)

	// A host where the role runs nothing fails alone; the others run.
	a.sh(1, "docker stop testapp-web-"+tag)
	out.Reset()
	logs, code = a.capstanIO(ctx, nil, &out, "exec", "-r", "web", "--", "env", "GREETING")
	if code != 1 || out.String() != web0+": hello\n" || !strings.Contains(logs, web1+" (web): ") || !strings.Contains(logs, "no running container") {
		t.Errorf("one web host stopped: exit %d, stdout %q\n%s", code, out.String(), logs)
	}
}

// openPTY opens a pseudo-terminal pair: the master (the test's end) and
// the terminal capstan gets as stdin and stdout.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(filepath.Join("/dev/pts", fmt.Sprint(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

func setSize(t *testing.T, tty *os.File, cols, rows uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows}); err != nil {
		t.Fatal(err)
	}
}

// screen collects what the master end reads.
type screen struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the screen shows text, typing poke every 300 ms
// meanwhile (if not "").
func (s *screen) waitFor(t *testing.T, master *os.File, text, poke string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal never showed %q:\n%q", text, s.String())
		}
		if poke != "" {
			master.WriteString(poke)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestE2EExecInteractive drives `capstan exec -i` through a
// pseudo-terminal: the local terminal goes raw (so Ctrl-C reaches the
// container as a byte and interrupts it there), the container has a
// terminal of the local size, follows a resize, and capstan exits with
// the command's status, the terminal restored.
func TestE2EExecInteractive(t *testing.T) {
	a := newE2EApp(t, 3)
	a.deployUnique("oneoff-i")
	master, tty := openPTY(t)
	setSize(t, tty, 100, 30)
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var scr screen
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			scr.mu.Lock()
			scr.b.Write(buf[:n])
			scr.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		logs string
		code int
	}
	done := make(chan result, 1)
	go func() {
		logs, code := a.capstanIO(ctx, tty, tty, "--log-level", "debug", "--log-format", "json", "exec", "-i", "-r", "web", "--", "tty")
		done <- result{logs, code}
	}()

	scr.waitFor(t, master, "tty yes", "")
	scr.waitFor(t, master, "size 100x30", "\r") // docker sizes the container's terminal just after it starts
	raw, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
		t.Errorf("the local terminal is not raw while the command runs: lflag %#x", raw.Lflag)
	}
	master.WriteString("hello\r")
	scr.waitFor(t, master, "got hello", "")

	setSize(t, tty, 132, 40)
	syscall.Kill(os.Getpid(), syscall.SIGWINCH) // the kernel signals only a controlling terminal's process group
	scr.waitFor(t, master, "size 132x40", "\r")

	master.WriteString("\x03")
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("capstan exec -i did not return after Ctrl-C:\n%q", scr.String())
	}
	t.Logf("the terminal showed:\n%q", scr.String())
	if !strings.Contains(scr.String(), "interrupted") || r.code != 130 {
		t.Errorf("Ctrl-C: exit %d (want the container's 130); screen:\n%q\nlogs:\n%s", r.code, scr.String(), r.logs)
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Errorf("terminal not restored: lflag %#x -> %#x", before.Lflag, after.Lflag)
	}
	if !strings.Contains(r.logs, `"interactive":true`) {
		t.Errorf("logs lack the exec line:\n%s", r.logs)
	}
}
