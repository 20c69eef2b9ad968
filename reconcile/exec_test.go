package reconcile

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// execHost answers the observe script with canned containers and runs
// every other command locally with sh, in home.
type execHost struct {
	t     *testing.T
	home  string
	cs    []Container
	calls [][]string
}

func (h *execHost) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	h.calls = append(h.calls, argv)
	if len(argv) > 2 && strings.Contains(argv[2], "docker ps -a") {
		return ps(h.t, h.cs...), nil
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdin = h.home, stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, &ExitError{Host: host, Code: cmd.ProcessState.ExitCode(), Stderr: string(out), Err: err}
	}
	return out, nil
}

func (h *execHost) Upload(context.Context, string, string, fs.FileMode, []byte) error {
	return errors.New("no upload")
}

func (h *execHost) Dial(context.Context, string, string, string) (net.Conn, error) {
	return nil, errors.New("no dial")
}

func execContainer(name, image, role, state string) Container {
	return Container{ID: "id-" + name, Name: name, Image: image, State: state, Status: "Up", Service: "testapp", Role: role, Created: time.Now()}
}

func TestApp_PrepareExec(t *testing.T) {
	a := testApp(t, "v3") // the configuration says v3; v2 runs
	h := &execHost{t: t, home: t.TempDir(), cs: []Container{
		execContainer("testapp-web-v2", "10.231.0.1:5000/testapp:v2", "web", "running"),
		execContainer("testapp-web-v1", "10.231.0.1:5000/testapp:v1", "web", "exited"),
	}}
	a.SSH = h
	ctx := context.Background()

	req := ExecRequest{Host: "10.0.0.1", Role: "web", Cmd: []string{"sh", "-c", "echo $SECRET_KEY"}, Env: []kamal.KV{{Key: "A", Value: "b c"}}}
	cmd, err := a.PrepareExec(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Join(cmd.Argv, " ")
	if cmd.Version != "v2" || !strings.HasPrefix(cmd.Container, "testapp-web-exec-v2-") {
		t.Errorf("version %q container %q: want the running v2", cmd.Version, cmd.Container)
	}
	for _, want := range []string{"docker run --rm --name " + cmd.Container + " --network kamal", "--env-file .kamal/apps/testapp/env/roles/web.env",
		"--env A=b c", "10.231.0.1:5000/testapp:v2 sh -c echo $SECRET_KEY"} {
		if !strings.Contains(argv, want) {
			t.Errorf("argv %q lacks %q", argv, want)
		}
	}
	if strings.Contains(argv, "s3cret-value") {
		t.Errorf("a secret is on the command line: %q", argv)
	}
	envFile := filepath.Join(h.home, ".kamal/apps/testapp/env/roles/web.env")
	b, err := os.ReadFile(envFile)
	if err != nil || string(b) != "SECRET_KEY=s3cret-value\n" {
		t.Fatalf("missing env file not written: %q, %v", b, err)
	}
	if fi, _ := os.Stat(envFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %o", fi.Mode().Perm())
	}

	// An env file the boot wrote is left alone.
	if err := os.WriteFile(envFile, []byte("SECRET_KEY=as-booted\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	req.Interactive = true
	if cmd, err = a.PrepareExec(ctx, req); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(envFile); string(b) != "SECRET_KEY=as-booted\n" {
		t.Errorf("existing env file rewritten: %q", b)
	}
	if cmd.Argv[2] != "-it" {
		t.Errorf("interactive argv %q", cmd.Argv)
	}

	// --reuse: docker exec into the running container, no env file step.
	h.calls = nil
	cmd, err = a.PrepareExec(ctx, ExecRequest{Host: "10.0.0.1", Role: "web", Cmd: []string{"/testapp", "env", "X"}, Env: []kamal.KV{{Key: "X", Value: "1"}}, Reuse: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker", "exec", "--env", "X=1", "testapp-web-v2", "/testapp", "env", "X"}
	if !slices.Equal(cmd.Argv, want) || len(h.calls) != 2 {
		t.Errorf("reuse argv %q (want %q), %d remote calls (want the observe and the audit line)", cmd.Argv, want, len(h.calls))
	}

	// Kamal's audit line for each exec, secrets masked.
	a.Redact = func(s string) string { return strings.ReplaceAll(s, "s3cret-value", "[REDACTED]") }
	if _, err := a.PrepareExec(ctx, ExecRequest{Host: "10.0.0.1", Role: "web", Cmd: []string{"echo", "s3cret-value"}, Reuse: true}); err != nil {
		t.Fatal(err)
	}
	audit, _ := os.ReadFile(filepath.Join(h.home, ".kamal/testapp-audit.log"))
	for _, want := range []string{"[web] Executed cmd 'sh -c echo $SECRET_KEY' on app version v2\n", "[web] Executed cmd '/testapp env X' on app version v2\n", "[web] Executed cmd 'echo [REDACTED]' on app version v2\n"} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
	if strings.Contains(string(audit), "s3cret-value") {
		t.Errorf("a secret in the audit log:\n%s", audit)
	}

	// No running container of the role.
	h.cs = h.cs[1:]
	if _, err := a.PrepareExec(ctx, req); !errors.Is(err, ErrNotRunning) {
		t.Errorf("nothing running: want ErrNotRunning, got %v", err)
	}
}

func TestRunningVersion(t *testing.T) {
	a := testApp(t, "v3")
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct{ image, name, want string }{
		{"10.231.0.1:5000/testapp:v2", "v2", "v2"},
		{"10.231.0.1:5000/testapp@" + digest, "sha256-abababababab", digest},
		{"3f2a9c1b7d4e", "v2", "v2"}, // an image ID: the tag moved
		{"other/image:v9", "v2", "v2"},
	} {
		got := runningVersion(a.Config, &Container{Name: "testapp-web-" + c.name, Image: c.image}, c.name)
		if got.Value != c.want {
			t.Errorf("image %q: version %q, want %q", c.image, got.Value, c.want)
		}
	}
}
