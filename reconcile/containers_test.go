package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

func TestCreateArgv(t *testing.T) {
	got, err := createArgv([]string{"docker", "run", "--detach", "--restart", "unless-stopped", "--name", "app-web-v1", "img:v1", "worker", "--detach"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker", "create", "--restart", "unless-stopped", "--name", "app-web-v1", "img:v1", "worker", "--detach"}
	if !slices.Equal(got, want) {
		t.Errorf("createArgv = %q, want %q (the app's own --detach stays)", got, want)
	}
	for _, bad := range [][]string{{"docker", "start", "x"}, {"docker", "run", "--name", "x", "img"}, {"docker"}} {
		if _, err := createArgv(bad); err == nil {
			t.Errorf("createArgv accepted %q", bad)
		}
	}
}

func TestSocketFor(t *testing.T) {
	for _, c := range []struct{ host, context, want string }{
		{"", "", DockerSocket},
		{"", "default", DockerSocket},
		{"unix:///run/user/1000/docker.sock", "", "/run/user/1000/docker.sock"},
		{"unix:///run/user/1000/docker.sock", "remote", "/run/user/1000/docker.sock"},
		{"tcp://10.0.0.1:2376", "", ""},
		{"ssh://me@host", "", ""},
		{"", "rootless", ""},
	} {
		if got := socketFor(c.host, c.context); got != c.want {
			t.Errorf("socketFor(%q, %q) = %q, want %q", c.host, c.context, got, c.want)
		}
	}
}

// fakeDocker puts a docker on PATH that logs its argv to dir/docker.log
// and prints a container ID for create.
func fakeDocker(t *testing.T, dir string) {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$*\" >> " + filepath.Join(dir, "docker.log") + "\n[ \"$1\" = create ] && echo c0ffee\nexit 0\n"
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
}

// TestCreateScript runs the create script through /bin/sh with a fake
// docker: rename first, directories, the env file from stdin with mode
// 0600 and no temporary file left, then docker create.
func TestCreateScript(t *testing.T) {
	dir := t.TempDir()
	fakeDocker(t, dir)
	env := filepath.Join(dir, "home/.kamal/apps/app/env/roles/web.env")
	vol := filepath.Join(dir, "home/data")
	cmd := exec.Command("sh", "-c", createScript, "sh", "old-id", "app-web-v1_replaced_ab", env, "1", vol,
		"docker", "create", "--name", "app-web-v1", "--env-file", env, "img:v1")
	cmd.Stdin = strings.NewReader("SECRET=s3cr3t\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "c0ffee" {
		t.Errorf("output %q, want the container ID", out)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "docker.log"))
	want := "rename old-id app-web-v1_replaced_ab\ncreate --name app-web-v1 --env-file " + env + " img:v1\n"
	if string(log) != want {
		t.Errorf("docker calls:\n%s\nwant:\n%s", log, want)
	}
	fi, err := os.Stat(env)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %o, want 600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(env); string(b) != "SECRET=s3cr3t\n" {
		t.Errorf("env file %q", b)
	}
	if st, err := os.Stat(vol); err != nil || !st.IsDir() {
		t.Errorf("directory %s not made: %v", vol, err)
	}
	left, _ := filepath.Glob(env + ".capstan-*")
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// No clash, no env file: only docker create runs.
	os.Remove(filepath.Join(dir, "docker.log"))
	out, err = exec.Command("sh", "-c", createScript, "sh", "", "", "", "0", "docker", "create", "img:v1").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "docker.log")); string(log) != "create img:v1\n" {
		t.Errorf("docker calls %q, want only create", log)
	}
}

// TestLockScript: the first run takes the lock and writes its details, a
// second one exits 3 and leaves the details alone.
func TestLockScript(t *testing.T) {
	home := t.TempDir()
	run := func(details string) (int, string) {
		cmd := exec.Command("sh", "-c", lockScript, "sh", ".kamal/lock-app")
		cmd.Dir = home
		cmd.Stdin = strings.NewReader(details)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := run("first\n"); code != 0 {
		t.Fatalf("take: exit %d: %s", code, out)
	}
	if code, _ := run("second\n"); code != 3 {
		t.Fatalf("held lock: exit %d, want 3", code)
	}
	b, err := os.ReadFile(filepath.Join(home, ".kamal/lock-app/details"))
	if err != nil || string(b) != "first\n" {
		t.Errorf("details %q (%v), want the first holder's", b, err)
	}
}

// TestObserveScript runs the observe script through /bin/sh with a fake
// docker: it reports home, DOCKER_HOST and the docker context (the
// environment's, else the config file's) and the lock.
func TestObserveScript(t *testing.T) {
	dir := t.TempDir()
	fakeDocker(t, dir)
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker/config.json"), []byte("{\n  \"auths\": {},\n  \"currentContext\": \"rootless\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv("DOCKER_HOST", "")
	t.Setenv("DOCKER_CONTEXT", "")
	observe := func() *Observed {
		t.Helper()
		argv := ObserveArgv(".kamal/lock-app")
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = home
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		o, err := ParseObserve("h", out)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	o := observe()
	if o.Home != home || o.DockerHost != "" || o.DockerContext != "rootless" || o.Lock != "" {
		t.Errorf("observed %+v", o)
	}
	t.Setenv("DOCKER_CONTEXT", "default")
	t.Setenv("DOCKER_HOST", "unix:///run/d.sock")
	if o := observe(); o.DockerContext != "default" || o.DockerHost != "unix:///run/d.sock" {
		t.Errorf("with the environment set: %+v", o)
	}
}

// A bare --env KEY (Kamal's form for a blank value) takes KEY from the
// docker client's environment, unset on the host: the container does not
// get it, so adoption must not expect it.
func TestDesiredEnv_SkipsBareKeys(t *testing.T) {
	spec := &kamal.Container{Run: kamal.Command{Argv: []string{"docker", "run", "--env", "A=1", "--env", "BLANK", "--env", "B=", "img"}}}
	got := strings.Join(desiredEnv(spec), " ")
	if got != "A=1 B=" {
		t.Errorf("desiredEnv = %q, want A=1 B=", got)
	}
}

// argvLog is a Host whose Run records argv and returns err.
type argvLog struct {
	Host
	runs [][]string
	err  error
}

func (f *argvLog) Run(_ context.Context, _ string, argv []string, _ io.Reader) ([]byte, error) {
	f.runs = append(f.runs, argv)
	return nil, f.err
}

// TestClearClash: a container holding the new name that was created and
// never started (a capstan killed between create and start) is removed;
// one that ran, or that cannot be removed (a start sent by the killed
// capstan came through since), is renamed away, kept for a rollback.
func TestClearClash(t *testing.T) {
	f := &argvLog{}
	r := &applyRun{a: &App{SSH: f}, log: slog.New(slog.DiscardHandler)}
	c := &created{name: "app-web-v2"}
	r.clearClash(t.Context(), "h1", &Container{ID: "id1", Name: "app-web-v2", State: "created"}, c)
	if len(f.runs) != 1 || !slices.Equal(f.runs[0], []string{"docker", "rm", "--", "id1"}) || c.clash != "" {
		t.Errorf("never started: ran %q, clash %q; want it removed, nothing renamed", f.runs, c.clash)
	}
	f.runs = nil
	for _, state := range []string{"exited", "running", "restarting"} {
		c := &created{name: "app-web-v2"}
		r.clearClash(t.Context(), "h1", &Container{ID: "id2", Name: "app-web-v2", State: state}, c)
		if len(f.runs) != 0 || c.clash != "id2" || !strings.HasPrefix(c.renamed, "app-web-v2_replaced_") {
			t.Errorf("%s: ran %q, clash %q renamed %q; want it renamed away, nothing removed", state, f.runs, c.clash, c.renamed)
		}
	}
	f.err = &ExitError{Code: 1, Stderr: "You cannot remove a running container", Err: errors.New("exit status 1")}
	c = &created{name: "app-web-v2"}
	r.clearClash(t.Context(), "h1", &Container{ID: "id3", Name: "app-web-v2", State: "created"}, c)
	if len(f.runs) != 1 || c.clash != "id3" || !strings.HasPrefix(c.renamed, "app-web-v2_replaced_") {
		t.Errorf("started since observed: ran %q, clash %q renamed %q; want a removal tried, then renamed away", f.runs, c.clash, c.renamed)
	}
}
