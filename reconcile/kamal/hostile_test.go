package kamal

import (
	"bytes"
	"errors"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/hostexec"
)

// The hostile-input suite for names and values of deploy.yml: each one is
// refused at load with FILE:LINE and the key, or carried to Docker byte
// for byte, never interpreted by a shell.

// hostileValues are carried verbatim wherever a value goes (blank values
// excepted: Kamal passes them as a bare NAME, see cmdBuilder.pair).
var hostileValues = []string{
	"; rm -rf / #", "a|b&c", "$(touch /tmp/capstan-pwned)", "`id`", "${HOME}", "$PWD/x", "<in >out 2>&1",
	"*?~#!", "~root", "'single'", `"double"`, `back\slash\`, "line1\nline2\n", "tab\tand\rcr",
	"ünïcödé ✓ 日本 \u202e", "-v/:/host", "--privileged", "=", "a=b=c", " lead and trail ", "#{x}",
	`\n\x00`, "\x01\x7f",
}

// hostileConfig is a configuration with VAL in every place a value goes to
// a host. Fields are replaced one by one by fill.
const hostileConfig = `service: app
image: org/app
registry:
  username: u
  password: [KAMAL_REGISTRY_PASSWORD]
builder:
  arch: amd64
volumes:
  - VOLUME
labels:
  lbl: LABEL
env:
  clear:
    E: ENV
logging:
  options:
    tag: LOGOPT
proxy:
  hosts: [PROXYHOST]
  healthcheck:
    path: HEALTHPATH
servers:
  web:
    hosts: [192.0.2.1]
    options:
      add-host: OPTION
    cmd: CMD
accessories:
  db:
    image: mysql:8
    host: 192.0.2.1
    options:
      label: ACCOPTION
    env:
      clear:
        D: ACCENV
    labels:
      l: ACCLABEL
    volumes:
      - ACCVOLUME
    cmd: ACCCMD
`

var hostileFields = []string{"VOLUME", "LABEL", "ENV", "LOGOPT", "PROXYHOST", "HEALTHPATH", "OPTION", "CMD", "ACCOPTION", "ACCENV", "ACCLABEL", "ACCVOLUME", "ACCCMD"}

// yamlQuote writes s as a YAML double-quoted scalar (Go's escapes are a
// subset of YAML's for valid UTF-8).
func yamlQuote(s string) string { return strconv.Quote(s) }

// fill returns hostileConfig with field set to v and the others plain.
func fill(field, v string) string {
	out := hostileConfig
	for _, f := range hostileFields {
		val := "plain-" + strings.ToLower(f)
		if f == field {
			val = v
		}
		if f == "CMD" || f == "ACCCMD" {
			// cmd is split like a shell word list; quote it so it
			// splits back into exactly [run, val].
			val = hostexec.Quote([]string{"run", val})
		}
		out = strings.Replace(out, " "+f+"\n", " "+yamlQuote(val)+"\n", 1)
		out = strings.Replace(out, "["+f+"]", "["+yamlQuote(val)+"]", 1)
	}
	return out
}

// wantIn returns the argument a value of field must appear as in argv.
func wantIn(field, v string) string {
	switch field {
	case "LABEL":
		return "lbl=" + v
	case "ENV":
		return "E=" + v
	case "LOGOPT":
		return "tag=" + v
	case "PROXYHOST":
		return "--host=" + v
	case "HEALTHPATH":
		return "--health-check-path=" + v
	case "ACCENV":
		return "D=" + v
	case "ACCLABEL":
		return "l=" + v
	}
	return v
}

// printArgv is the remote side of the round trip: sh runs it, printf
// prints every argument followed by a NUL byte.
var printArgv = []string{"printf", `%s\000`}

// throughShell quotes argv with capstan's quoting function, runs the line
// with sh -c and returns the arguments the shell passed on.
func throughShell(t testing.TB, sh string, argv []string) []string {
	t.Helper()
	line := hostexec.Quote(append(slices.Clone(printArgv), argv...))
	cmd := exec.Command(sh, "-c", line)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "PWD=/wrong", "LC_ALL=C.UTF-8"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c <%d bytes>: %v: %s", sh, len(line), err, stderr.Bytes())
	}
	parts := strings.Split(string(out), "\x00")
	return parts[:len(parts)-1]
}

// localShells lists /bin/sh and, unless -short, bash (root's usual login
// shell).
func localShells(t testing.TB) []string {
	var out []string
	shells := []string{"/bin/sh", "/bin/bash"}
	if testing.Short() {
		shells = shells[:1]
	}
	for _, sh := range shells {
		if _, err := exec.LookPath(sh); err == nil {
			out = append(out, sh)
		}
	}
	if len(out) == 0 {
		t.Skip("no /bin/sh")
	}
	return out
}

// remoteCommands returns every argv capstan would run for the plans: the
// docker run lines, the proxy deploy and boot lines and the mkdir of the
// directories, expanded for a login directory of /root.
func remoteCommands(t testing.TB, c *Config) [][]string {
	t.Helper()
	plans, err := c.Plans()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, p := range plans {
		if p.Proxy != nil {
			out = append(out, p.Proxy.Run.Expand("/root"))
		}
		for _, ct := range append(slices.Clone(p.Accessories), p.Apps...) {
			out = append(out, ct.Run.Expand("/root"))
			out = append(out, append([]string{"mkdir", "-p", "--"}, ExpandHome(ct.Directories, "/root")...))
			if ct.Proxy != nil {
				out = append(out, ct.Proxy.Command("0123456789ab").Argv)
			}
		}
	}
	return out
}

// checkVerbatim loads cfg, checks that want is an argument of some
// command, and that every command survives quoting and a real shell byte
// for byte (several in one line: Quote of a concatenation is the
// concatenation of the Quotes).
func checkVerbatim(t *testing.T, cfg, want string) {
	t.Helper()
	c, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	// Commands are batched, each followed by a separator, into lines of
	// at most 64 KiB (one line is one argument of sh, at most 128 KiB).
	var batches [][]string
	var batch []string
	found := false
	for _, argv := range remoteCommands(t, c) {
		found = found || slices.Contains(argv, want)
		if len(batch) > 0 && len(hostexec.Quote(batch))+len(hostexec.Quote(argv)) > 64<<10 {
			batches, batch = append(batches, batch), nil
		}
		batch = append(append(batch, argv...), "\x01end of command\x01")
	}
	batches = append(batches, batch)
	if !found {
		t.Errorf("no command has the argument %q", want)
	}
	for _, sh := range localShells(t) {
		for _, b := range batches {
			if got := throughShell(t, sh, b); !slices.Equal(got, b) {
				t.Fatalf("%s changed the argv:\n got %q\nwant %q", sh, got, b)
			}
		}
	}
}

func TestPlan_HostileValuesVerbatim(t *testing.T) {
	for _, field := range hostileFields {
		for i, v := range hostileValues {
			if field == "VOLUME" || field == "ACCVOLUME" {
				if strings.HasPrefix(v, HomePrefix) {
					continue // a volume's leading $PWD/ is the login directory, as with Kamal (TestPlan_HomePrefixOnlyInPaths)
				}
			}
			t.Run(field+"/"+strconv.Itoa(i), func(t *testing.T) {
				checkVerbatim(t, fill(field, v), wantIn(field, v))
			})
		}
	}
}

// TestPlan_64KBValuesVerbatim puts a 64 KiB value full of shell syntax in
// each place in turn. One such value fits in a remote command line (the
// kernel allows 128 KiB per argument, and sshd hands the whole line to the
// login shell as one).
func TestPlan_64KBValuesVerbatim(t *testing.T) {
	big := strings.Repeat("x$(id);'\"`\n|&<>*?~#!\\", 64<<10/20)
	for _, field := range hostileFields {
		t.Run(field, func(t *testing.T) {
			checkVerbatim(t, fill(field, big), wantIn(field, big))
		})
	}
}

// TestPlan_64KBNamesVerbatim: env and label names may hold shell syntax
// and be 64 KiB long; they reach Docker as written.
func TestPlan_64KBNamesVerbatim(t *testing.T) {
	name := strings.Repeat("N$(id);'\"`|&<>*?~#!\\", 64<<10/20)
	for _, block := range []string{"env:\n  clear:\n    ", "labels:\n  "} {
		indent := block[strings.LastIndexByte(block, '\n')+1:]
		cfg := strings.Replace(minimal, "builder:", block+"? "+yamlQuote(name)+"\n"+indent+": v\nbuilder:", 1)
		checkVerbatim(t, cfg, name+"=v")
	}
}

// TestPlan_HomePrefixOnlyInPaths: "$PWD/" in a value is not a path.
// Command.Expand puts the login directory only in the volumes and
// directories capstan derives (and in a volume that starts with $PWD/,
// which Kamal's shell would expand); ExpandHome once replaced "$PWD/" in
// any argument, so an env value "$PWD/x" reached the container as
// "/root/x".
func TestPlan_HomePrefixOnlyInPaths(t *testing.T) {
	cfg := strings.Replace(fill("ENV", "$PWD/bin"), `"plain-option"`, `"$PWD/opt"`, 1)
	cfg = strings.Replace(cfg, `"plain-volume"`, `"$PWD/data:/data"`, 1)
	c, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	argv := p.Apps[0].Run.Expand("/home/deploy")
	for _, want := range []string{"E=$PWD/bin", "$PWD/opt", "/home/deploy/data:/data"} {
		if !slices.Contains(argv, want) {
			t.Errorf("argv lacks %q:\n%q", want, argv)
		}
	}
	acc := p.Accessories[0]
	if !slices.Contains(acc.Run.Expand("/home/deploy"), "/home/deploy/.kamal/apps/app/env/accessories/db.env") &&
		!slices.Contains(acc.Run.Expand("/home/deploy"), ".kamal/apps/app/env/accessories/db.env") {
		t.Errorf("accessory env file missing: %q", acc.Run.Argv)
	}
}

// refused is a configuration that must not load: the error must wrap
// ErrInvalid and sit at the line marked "#<" with the key path given.
type refused struct {
	name, cfg, path string
}

func checkRefused(t *testing.T, tc refused) {
	t.Helper()
	line := 0
	for i, l := range strings.Split(tc.cfg, "\n") {
		if strings.Contains(l, "#<") {
			line = i + 1
		}
	}
	if line == 0 {
		t.Fatal("test case without #< marker")
	}
	_, err := load(t, map[string]string{"config/deploy.yml": tc.cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\nS=v\n"}, LoadOptions{})
	if err == nil {
		t.Fatalf("loaded:\n%s", tc.cfg)
	}
	found := false
	for _, e := range asErrors(t, err) {
		if errors.Is(e, ErrInvalid) && e.File == "config/deploy.yml" && e.Line == line && e.Path == tc.path {
			found = true
		}
		if strings.Contains(e.Error(), "\n") || strings.ContainsRune(e.Error(), 0) {
			t.Errorf("error spans lines or holds NUL: %q", e.Error())
		}
	}
	if !found {
		t.Errorf("no ErrInvalid at config/deploy.yml:%d %q in:\n%v", line, tc.path, err)
	}
}

const hostileHead = "service: app\nimage: org/app\nregistry:\n  username: u\n  password: [KAMAL_REGISTRY_PASSWORD]\nbuilder:\n  arch: amd64\n"

func TestLoad_HostileNamesRefused(t *testing.T) {
	web := hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n"
	cases := []refused{
		{"service newline", "service: \"app\\n;id\" #<\n" + web[len("service: app\n"):], "service"},
		{"service slash", "service: app/x #<\n" + web[len("service: app\n"):], "service"},
		{"role slash", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  ../../etc/cron.d/x: #<\n    hosts: [192.0.2.2]\n", "servers.../../etc/cron.d/x"},
		{"role space", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  \"a b\": [192.0.2.2] #<\n", "servers.a b"},
		{"role dots", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  \"..\": [192.0.2.2] #<\n", "servers..."},
		{"role metachar", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  \"w$(id)\": [192.0.2.2] #<\n", "servers.w$(id)"},
		{"role newline", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  \"w\\nx\": [192.0.2.2] #<\n", "servers.w\nx"},
		{"role unicode", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  wéb: [192.0.2.2] #<\n", "servers.wéb"},
		{"role 64 KiB", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n  ? " + strings.Repeat("r", 64<<10) + " #<\n  : [192.0.2.2]\n", "servers." + strings.Repeat("r", 64<<10)},
		{"host unicode", hostileHead + "servers:\n  - bücher.example #<\n", "servers[0]"},
		{"host 64 KiB", hostileHead + "servers:\n  - " + strings.Repeat("h", 64<<10) + " #<\n", "servers[0]"},
		{"accessory name 64 KiB", web + "accessories:\n  ? " + strings.Repeat("a", 64<<10) + " #<\n  :\n    image: i\n    host: 192.0.2.1\n", "accessories." + strings.Repeat("a", 64<<10)},
		{"primary role slash", hostileHead + "primary_role: a/b\nservers:\n  a/b: #<\n    hosts: [192.0.2.1]\n", "servers.a/b"},
		{"host semicolon", hostileHead + "servers:\n  - \"192.0.2.1;id\" #<\n", "servers[0]"},
		{"host option", hostileHead + "servers:\n  - -oProxyCommand=id #<\n", "servers[0]"},
		{"host space", hostileHead + "servers:\n  web:\n    hosts:\n      - 192.0.2.1\n      - \"a b\" #<\n", "servers.web.hosts[1]"},
		{"host newline", hostileHead + "servers:\n  web:\n    - \"h\\nx\" #<\n", "servers.web[0]"},
		{"tagged host", hostileHead + "servers:\n  web:\n    hosts:\n      - \"$(id)\": tag #<\n", "servers.web.hosts[0]"},
		{"accessory name slash", web + "accessories:\n  ../x: #<\n    image: i\n    host: 192.0.2.1\n", "accessories.../x"},
		{"accessory name space", web + "accessories:\n  \"d b\": #<\n    image: i\n    host: 192.0.2.1\n", "accessories.d b"},
		{"accessory service", web + "accessories:\n  db:\n    service: \"db/../x\" #<\n    image: i\n    host: 192.0.2.1\n", "accessories.db.service"},
		{"accessory service dash", web + "accessories:\n  db:\n    service: -db #<\n    image: i\n    host: 192.0.2.1\n", "accessories.db.service"},
		{"accessory host", web + "accessories:\n  db:\n    image: i\n    host: \"h|id\" #<\n", "accessories.db.host"},
		{"accessory hosts", web + "accessories:\n  db:\n    image: i\n    hosts:\n      - \"h`id`\" #<\n", "accessories.db.hosts[0]"},
		{"env name =", web + "env:\n  \"A=B\": x #<\n", "env.A=B"},
		{"env name space", web + "env:\n  clear:\n    \"A B\": x #<\n", "env.clear.A B"},
		{"env name newline", web + "env:\n  clear:\n    \"A\\nLD_PRELOAD\": x #<\n", "env.clear.A\nLD_PRELOAD"},
		{"env name empty", web + "env:\n  clear:\n    \"\": x #<\n", "env.clear."},
		{"secret name newline", web + "env:\n  secret:\n    - \"A\\nLD_PRELOAD=/x:S\" #<\n", "env.secret[0]"},
		{"tag env name", web + "env:\n  tags:\n    t:\n      \"X=Y\": x #<\n", "env.tags.t.X=Y"},
		{"role env name", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n    env:\n      \"A;B\": x\n      \"A=B\": x #<\n", "servers.web.env.A=B"},
		{"accessory env name", web + "accessories:\n  db:\n    image: i\n    host: 192.0.2.1\n    env:\n      secret:\n        - \"A B\" #<\n", "accessories.db.env.secret[0]"},
		{"label key =", web + "labels:\n  \"a=b\": x #<\n", "labels.a=b"},
		{"role label key space", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n    labels:\n      \"a b\": x #<\n", "servers.web.labels.a b"},
		{"accessory label key", web + "accessories:\n  db:\n    image: i\n    host: 192.0.2.1\n    labels:\n      \"a\\tb\": x #<\n", "accessories.db.labels.a\tb"},
		{"log option key", web + "logging:\n  options:\n    \"max-size=1k\": x #<\n", "logging.options.max-size=1k"},
		{"option with =", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n    options:\n      \"env=X=1\": y #<\n", "servers.web.options.env=X=1"},
		{"image option", "service: app\nimage: -v/:/host #<\n" + web[len("service: app\nimage: org/app\n"):], "image"},
		{"image space", "service: app\nimage: \"org/app latest\" #<\n" + web[len("service: app\nimage: org/app\n"):], "image"},
		{"registry server", "service: app\nimage: org/app\nregistry:\n  server: \"-v/:/h\" #<\n" + web[len("service: app\nimage: org/app\nregistry:\n"):], "registry.server"},
		{"accessory image", web + "accessories:\n  db:\n    image: --privileged #<\n    host: 192.0.2.1\n", "accessories.db.image"},
		{"proxy run option", web + "proxy:\n  run:\n    options:\n      \"publish=1:1\": x #<\n", "proxy.run.options.publish=1:1"},
		{"option with dash", web + "accessories:\n  db:\n    image: i\n    host: 192.0.2.1\n    options:\n      \"-v\": \"/:/host\" #<\n", "accessories.db.options.-v"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkRefused(t, tc) })
	}
}

// TestLoad_NULRefused: a NUL byte cannot be part of an exec argument, so
// it is refused wherever it is, key or value.
func TestLoad_NULRefused(t *testing.T) {
	web := hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n"
	cases := []refused{
		{"service", "service: \"app\\0\" #<\n" + web[len("service: app\n"):], "service"},
		{"image", "service: app\nimage: \"org/app\\0x\" #<\n" + web[len("service: app\nimage: org/app\n"):], "image"},
		{"env value", web + "env:\n  clear:\n    A: \"x\\0y\" #<\n", "env.clear.A"},
		{"env key", web + "env:\n  \"A\\0\": x #<\n", "env.A\x00"},
		{"label value", web + "labels:\n  a: \"\\0\" #<\n", "labels.a"},
		{"volume", web + "volumes:\n  - \"/a\\0:/b\" #<\n", "volumes[0]"},
		{"option value", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n    options:\n      add-host: \"h\\0\" #<\n", "servers.web.options.add-host"},
		{"cmd", hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\n    cmd: \"run \\0\" #<\n", "servers.web.cmd"},
		{"host", hostileHead + "servers:\n  - \"192.0.2.1\\0\" #<\n", "servers[0]"},
		{"proxy host", web + "proxy:\n  host: \"a\\0.example\" #<\n", "proxy.host"},
		{"accessory option", web + "accessories:\n  db:\n    image: i\n    host: 192.0.2.1\n    options:\n      label: \"\\0\" #<\n", "accessories.db.options.label"},
		{"secret name", web + "env:\n  secret:\n    - \"S\\0\" #<\n", "env.secret[0]"},
		{"x- extension", web + "x-anything: \"\\0\" #<\n", "x-anything"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkRefused(t, tc) })
	}
}

// TestEnvFile_NoInjection: a secret value with newlines, carriage returns
// and an "=" is written on one line of the env file, encoded as Kamal
// encodes it (Ruby String#dump without quotes, \" and \# unescaped), so
// Docker's env-file reader sees exactly the variables named in env.secret.
func TestEnvFile_NoInjection(t *testing.T) {
	cfg := minimal + "env:\n  secret:\n    - A\n    - B\n"
	// DOTENV_LINEBREAK_MODE=legacy makes dotenv turn \n and \r into real
	// line breaks, as a multi-line quoted value would.
	secrets := "DOTENV_LINEBREAK_MODE=legacy\nKAMAL_REGISTRY_PASSWORD=pw\n" +
		`A="x\nLD_PRELOAD=/tmp/evil.so\r\nB=stolen"` + "\n" +
		"B='#{x} \"q\" \\ $(id) `id` \u00e9'\n"
	c, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": secrets}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	content := p.Apps[0].EnvFile.Content.Reveal()
	want := "A=x\\nLD_PRELOAD=/tmp/evil.so\\r\\nB=stolen\n" + "B=#{x} \"q\" \\\\ $(id) `id` \u00e9\n"
	if content != want {
		t.Errorf("env file:\n got %q\nwant %q", content, want)
	}
	// Docker's env-file reader: one variable per line, NAME up to the
	// first "=".
	var names []string
	for _, line := range strings.Split(strings.TrimSuffix(content, "\n"), "\n") {
		name, _, _ := strings.Cut(line, "=")
		names = append(names, name)
	}
	if !slices.Equal(names, []string{"A", "B"}) {
		t.Errorf("env file defines %q, want exactly A and B", names)
	}
}

// TestLoad_CommandLineTooLong: two 64 KiB values in one container make a
// docker run line the host would refuse (one argument of at most 128 KiB
// for the login shell); Load says so instead of the deploy failing.
func TestLoad_CommandLineTooLong(t *testing.T) {
	big := strings.Repeat("v", 64<<10)
	cfg := minimal + "env:\n  clear:\n    A: " + big + "\n    B: " + big + "\n"
	_, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "docker run command of app-web-v1") {
		t.Fatalf("err = %v, want ErrTooLarge naming the container", err)
	}
	cfg = minimal + "env:\n  clear:\n    A: " + big + "\n"
	if _, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{}); err != nil {
		t.Fatalf("one 64 KiB value: %v", err)
	}
}

// TestLoad_HostileNamesInDestinationFile: a name from the destination
// file is reported at its line in that file.
func TestLoad_HostileNamesInDestinationFile(t *testing.T) {
	files := map[string]string{
		"config/deploy.yml":    minimal,
		"config/deploy.st.yml": "env:\n  clear:\n    OK: 1\n    \"A=B\": x\nlabels:\n  l: \"\\0\"\n",
		".kamal/secrets":       "KAMAL_REGISTRY_PASSWORD=pw\n",
	}
	_, err := load(t, files, LoadOptions{Destination: "st"})
	var got []string
	for _, e := range asErrors(t, err) {
		got = append(got, e.Error())
	}
	want := []string{
		"config/deploy.st.yml:4: env.clear.A=B: invalid env name: it contains \"=\", so Docker would split NAME=value elsewhere",
		"config/deploy.st.yml:6: labels.l: value contains a NUL byte, which no command argument can carry",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
