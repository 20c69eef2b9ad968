package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

func TestExec_UsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"exec"},
		{"exec", "-r", "web"},
		{"exec", "--detach", "-i", "--", "sh"},
		{"exec", "--detach", "--reuse", "--", "sh"},
		{"exec", "--primary", "--hosts", "a", "--", "sh"},
		{"exec", "-e", "NOVALUE", "--", "sh"},
		{"exec", "-e", "=v", "--", "sh"},
		{"exec", "--bogus", "--", "sh"},
	} {
		_, errOut, code := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (stderr %q)", args, code, exitUsage, errOut)
		}
	}
}

func TestExecFlags_Parse(t *testing.T) {
	e := &env{stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	var f execFlags
	fs := newFlagSet(e, "exec", execUsage)
	f.register(fs, e)
	args := []string{"-r", "web,worker", "--hosts", "10.0.0.1, 10.0.0.*", "--reuse", "-e", "A=1", "--env", "B=x=y", "-d", "staging", "--", "sh", "-c", "echo $A"}
	if help, err := parseFlags(fs, args); help || err != nil {
		t.Fatal(help, err)
	}
	if strings.Join(f.sel.roles, "|") != "web|worker" || strings.Join(f.sel.hosts, "|") != "10.0.0.1|10.0.0.*" {
		t.Errorf("roles %q hosts %q", f.sel.roles, f.sel.hosts)
	}
	if !f.reuse || f.interactive || f.detach || f.destination != "staging" {
		t.Errorf("flags %+v", f)
	}
	if got := fs.Args(); strings.Join(got, "|") != "sh|-c|echo $A" {
		t.Errorf("command %q", got)
	}
	kv, err := parseEnv(f.env)
	if err != nil || len(kv) != 2 || kv[1].Key != "B" || kv[1].Value != "x=y" {
		t.Errorf("env %+v %v", kv, err)
	}
}

const execDeploy = `service: app
image: app
servers:
  web:
    hosts: [10.0.0.1, 10.0.0.2]
  worker:
    hosts: [10.0.0.3, 10.0.0.1]
  jobs:
    hosts: [10.0.0.4]
primary_role: web
registry:
  server: r.example
  username: u
  password: [PW]
builder:
  arch: amd64
`

func execConfig(t *testing.T) *kamal.Config {
	t.Helper()
	fsys := fstest.MapFS{
		"config/deploy.yml": {Data: []byte(execDeploy)},
		".kamal/secrets":    {Data: []byte("PW=registry-password\n")},
	}
	cfg, err := kamal.Load(fsys, kamal.LoadOptions{Version: "v1", FingerprintKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSelectTargets(t *testing.T) {
	cfg := execConfig(t)
	str := func(ts []execTarget) string {
		var b []string
		for _, x := range ts {
			b = append(b, x.host+"/"+x.role)
		}
		return strings.Join(b, " ")
	}
	for _, c := range []struct {
		name string
		sel  execSelection
		want string
	}{
		{"all", execSelection{}, "10.0.0.1/web 10.0.0.1/worker 10.0.0.2/web 10.0.0.4/jobs 10.0.0.3/worker"},
		{"role", execSelection{roles: []string{"worker"}}, "10.0.0.1/worker 10.0.0.3/worker"},
		{"roles glob", execSelection{roles: []string{"w*"}}, "10.0.0.1/web 10.0.0.1/worker 10.0.0.2/web 10.0.0.3/worker"},
		{"primary", execSelection{primary: true}, "10.0.0.1/web 10.0.0.1/worker"},
		{"primary of role", execSelection{roles: []string{"worker"}, primary: true}, "10.0.0.3/worker"},
		{"hosts", execSelection{hosts: []string{"10.0.0.2", "10.0.0.4"}}, "10.0.0.2/web 10.0.0.4/jobs"},
		{"hosts glob and role", execSelection{roles: []string{"web"}, hosts: []string{"10.0.0.*"}}, "10.0.0.1/web 10.0.0.2/web"},
		{"interactive: the primary host, first role", execSelection{interactive: true}, "10.0.0.1/web"},
		{"interactive on a role", execSelection{interactive: true, roles: []string{"worker"}}, "10.0.0.3/worker"},
		{"interactive on one named host", execSelection{interactive: true, hosts: []string{"10.0.0.4"}}, "10.0.0.4/jobs"},
	} {
		got, err := selectTargets(cfg, c.sel)
		if err != nil || str(got) != c.want {
			t.Errorf("%s: got %q (%v), want %q", c.name, str(got), err, c.want)
		}
	}
	for _, sel := range []execSelection{
		{roles: []string{"nope"}},
		{hosts: []string{"10.9.9.9"}},
		{roles: []string{"jobs"}, hosts: []string{"10.0.0.1"}},
		{interactive: true, hosts: []string{"10.0.0.1", "10.0.0.2"}},
		{hosts: []string{"["}},
	} {
		if got, err := selectTargets(cfg, sel); !errors.Is(err, errUsage) {
			t.Errorf("%+v: want a usage error, got %q, %v", sel, str(got), err)
		}
	}
}

func TestTargetLabels(t *testing.T) {
	if l := targetLabels([]execTarget{{"h1", "web"}}); l != nil {
		t.Errorf("one target is not prefixed: %q", l)
	}
	got := targetLabels([]execTarget{{"h1", "web"}, {"h1", "worker"}, {"h2", "web"}})
	if strings.Join(got, "|") != "h1 web|h1 worker|h2" {
		t.Errorf("labels %q", got)
	}
}

func TestLinePrefixer(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	a, b := newLinePrefixer(&mu, &out, "h1"), newLinePrefixer(&mu, &out, "h2")
	a.Write([]byte("one\ntw"))
	b.Write([]byte("x\n"))
	a.Write([]byte("o\nthree"))
	a.Flush()
	b.Flush()
	if want := "h1: one\nh2: x\nh1: two\nh1: three\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}

	// Concurrent writers never mix within a line.
	out.Reset()
	var wg sync.WaitGroup
	for i := range 8 {
		p := newLinePrefixer(&mu, &out, fmt.Sprintf("p%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				p.Write([]byte("abc"))
				p.Write([]byte("def\n"))
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		if _, rest, _ := strings.Cut(l, ": "); rest != "abcdef" {
			t.Fatalf("mixed line %q", l)
		}
	}

	// A line longer than the bound is written in pieces.
	out.Reset()
	p := newLinePrefixer(&mu, &out, "h")
	p.Write(bytes.Repeat([]byte("x"), maxPrefixedLine+10))
	p.Flush()
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != 2 || len(got[0]) != len("h: ")+maxPrefixedLine || got[1] != "h: "+strings.Repeat("x", 10) {
		t.Errorf("long line split into %d pieces", len(got))
	}
}

func TestExitStatus(t *testing.T) {
	exit := func(code int) error { return fmt.Errorf("wrapped: %w", &hostexec.ExitError{Code: code}) }
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{exit(3), 3},
		{exit(137), 137},
		{errors.New("unreachable"), exitFailure},
	} {
		if got := exitStatus(c.err); got != c.want {
			t.Errorf("exitStatus(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if w := worstExit([]int{0, 2, 1, 0}); w != 2 {
		t.Errorf("worst of 0,2,1,0 = %d", w)
	}
	if w := worstExit([]int{0, 0}); w != 0 {
		t.Errorf("worst of 0,0 = %d", w)
	}
	var errb bytes.Buffer
	if code := exitCode(fmt.Errorf("x: %w", &exitStatusError{code: 42}), &errb); code != 42 || errb.Len() != 0 {
		t.Errorf("exitCode of a remote status: %d, printed %q", code, errb.String())
	}
}
