package kamal

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
)

// FuzzLoadDestination loads a base and a destination file that differ
// (FuzzLoad gives both the same text), so the deep merge sees real
// overrides. Whatever the input: no panic, every error one line with a
// sentinel, and a configuration that loads has only names that passed
// nameRule and no NUL byte in any argument it would run.
func FuzzLoadDestination(f *testing.F) {
	f.Add(minimal+"env:\n  clear:\n    A: x\n", "servers:\n  - 192.0.2.9\nenv:\n  clear:\n    A: y\n")
	f.Add(minimal+"proxy:\n  host: a.example\n", "proxy:\n  hosts: [b.example]\n")
	f.Add(accHead+"    files:\n      - conf/my.cnf:/etc/my.cnf\n", "accessories:\n  db:\n    files:\n      - ../x:/../y\n")
	f.Add(hostileConfig, "servers:\n  \"w b\":\n    hosts: [\"h;x\"]\nlabels:\n  \"a=b\": \"\\0\"\n")
	f.Add(minimal, "<%= ENV['X'] %>: 1\nx-a: &a {b: *a}\n")
	f.Fuzz(func(t *testing.T, base, dest string) {
		files := mapFS(map[string]string{
			"config/deploy.yml":    base,
			"config/deploy.st.yml": dest,
			".kamal/secrets":       "KAMAL_REGISTRY_PASSWORD=pw\nS=v\n",
			"conf/my.cnf":          "x",
		})
		start := time.Now()
		c, err := Load(files, LoadOptions{Destination: "st", Version: "v1", FingerprintKey: testKey,
			LookupEnv: func(k string) (string, bool) { return "v-" + k, true }})
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Load took %v", d)
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is %T %v, want non-empty Errors", err, err)
			}
			for _, e := range es {
				if e.Kind == nil || e.Msg == "" || strings.ContainsAny(e.Error(), "\n\r\x00") {
					t.Fatalf("bad error %#v", e)
				}
			}
			return
		}
		for _, r := range c.Roles {
			if nameRule("role", r.Name) != "" {
				t.Fatalf("role %q loaded", r.Name)
			}
			for _, h := range r.Hosts {
				if nameRule("host", h) != "" {
					t.Fatalf("host %q loaded", h)
				}
			}
		}
		for _, a := range c.Accessories {
			if nameRule("accessory", a.Name) != "" || nameRule("container", a.Service) != "" {
				t.Fatalf("accessory %q (service %q) loaded", a.Name, a.Service)
			}
		}
		for _, argv := range remoteCommands(t, c) {
			for _, a := range argv {
				if strings.IndexByte(a, 0) >= 0 {
					t.Fatalf("NUL in argument %q", a)
				}
			}
		}
	})
}

// FuzzPlan_Verbatim puts an arbitrary value in one of the places a value
// reaches a host. Either Load refuses it, or the value is an argument of
// a command (as is, or as NAME=value) and every command comes out of
// hostexec.Quote and a real /bin/sh byte for byte.
func FuzzPlan_Verbatim(f *testing.F) {
	for i, v := range hostileValues {
		f.Add(uint8(i), v)
	}
	f.Add(uint8(0), "\xff\xfe invalid utf-8")
	f.Add(uint8(3), "'\\''")
	f.Fuzz(func(t *testing.T, which uint8, v string) {
		field := hostileFields[int(which)%len(hostileFields)]
		if len(v) > 4096 || blank(v) {
			return // blank values are a bare NAME by design (cmdBuilder.pair)
		}
		c, err := load(t, map[string]string{"config/deploy.yml": fill(field, v), ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{})
		if err != nil {
			return // refused at load
		}
		var all []string
		for _, argv := range remoteCommands(t, c) {
			all = append(append(all, argv...), "\x01end\x01")
		}
		want := wantIn(field, v)
		homeVolume := (field == "VOLUME" || field == "ACCVOLUME") && strings.HasPrefix(v, HomePrefix)
		if !slices.Contains(all, want) && !homeVolume {
			// YAML may normalise a value (line breaks in plain
			// scalars…): then it must still be an argument as YAML
			// read it, which the shell round trip below checks.
			t.Logf("value %q not found as is", v)
		}
		if got := throughShell(t, "/bin/sh", all); !slices.Equal(got, all) {
			t.Fatalf("/bin/sh changed the argv:\n got %q\nwant %q", got, all)
		}
	})
}

// FuzzSplitCmd checks the cmd: splitter against /bin/sh: a cmd that
// splitCmd accepts (no expansion, substitution, redirection or list) must
// split into exactly the words sh makes of it, run in an empty directory
// so that globs match nothing and stay literal.
func FuzzSplitCmd(f *testing.F) {
	for _, s := range []string{
		`bundle exec sidekiq -q default`, `sh -c 'a && b'`, `echo "x y" z\ w`, `a=b#c`, `a #c`,
		"a\\\nb", `"a\"b\\c"`, `'it'\''s'`, `a\`, `*.rb ?x [ab]`, "a\tb\nc", `"\$x"`, `a~b`, `{a,b}`,
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		words, bad := splitCmd(s)
		if bad != "" || strings.IndexByte(s, 0) >= 0 || len(s) > 4096 {
			return
		}
		// "start" keeps printf from running its format once with no
		// argument when s is empty.
		cmd := exec.Command("/bin/sh", "-c", hostexec.Quote(append(slices.Clone(printArgv), "start"))+" "+s)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LC_ALL=C.UTF-8"}
		out, err := cmd.Output()
		if err != nil {
			t.Skipf("sh refused %q: %v", s, err) // e.g. a syntax error
		}
		got := strings.Split(string(out), "\x00")
		got = got[1 : len(got)-1]
		if !slices.Equal(got, words) && !(len(got) == 0 && len(words) == 0) {
			t.Fatalf("splitCmd(%q) = %q, sh makes %q", s, words, got)
		}
	})
}

// FuzzParseEnvFile feeds arbitrary text to the operator's env file parser
// (--secrets-env-file). No panic, keys as dotenv allows them, and an
// error is one line per problem that never quotes a value.
func FuzzParseEnvFile(f *testing.F) {
	for _, tc := range dotenvRules {
		f.Add(tc.text)
	}
	f.Add("A=zq9-value\nB=$A\nC=$(id)\nD=\"${A}\\n\"\nexport E\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := ParseEnvFile("env", []byte(text))
		if err != nil {
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T", err)
			}
			for _, e := range es {
				if strings.ContainsAny(e.Error(), "\n\x00") || (strings.Contains(e.Error(), "zq9-value") && !strings.Contains(e.Path, "zq9")) {
					t.Fatalf("bad error %q", e.Error())
				}
			}
			return
		}
		for k := range m {
			if k == "" || strings.ContainsAny(k, "= \t\n\x00") {
				t.Fatalf("key %q", k)
			}
		}
	})
}
