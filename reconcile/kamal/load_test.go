package kamal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

const minimal = `service: app
image: org/app
registry:
  username: u
  password:
    - KAMAL_REGISTRY_PASSWORD
builder:
  arch: amd64
servers:
  - 192.0.2.1
`

func mapFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for k, v := range files {
		m[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return m
}

func load(t *testing.T, files map[string]string, opts LoadOptions) (*Config, error) {
	t.Helper()
	if opts.Revision == "" && opts.Version == "" {
		opts.Version = "v1"
	}
	if opts.FingerprintKey == nil {
		opts.FingerprintKey = testKey
	}
	return Load(mapFS(files), opts)
}

// asErrors returns the *Error elements of err, failing the test if err is
// not an Errors.
func asErrors(t *testing.T, err error) Errors {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T) is not kamal.Errors", err, err)
	}
	return es
}

func TestLoad_ErrorKinds(t *testing.T) {
	secrets := map[string]string{".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}
	with := func(cfg string, extra map[string]string) map[string]string {
		m := map[string]string{"config/deploy.yml": cfg}
		for k, v := range secrets {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name  string
		files map[string]string
		opts  LoadOptions
		kind  error
		file  string
		line  int
		path  string
	}{
		{"erb backticks", with(minimal+"env:\n  A: <%= `id` %>\n", nil), LoadOptions{}, ErrUnsafe, "config/deploy.yml", 12, ""},
		{"erb %x", with(minimal+"env:\n  A: <%= %x(id) %>\n", nil), LoadOptions{}, ErrUnsafe, "config/deploy.yml", 12, ""},
		{"erb line after trim", with("<%- -%>\n<%- -%>\n"+minimal+"env:\n  A: <%= system('id') %>\n", nil), LoadOptions{}, ErrUnsafe, "config/deploy.yml", 14, ""},
		{"unknown key", with(minimal+"servers_typo: 1\n", nil), LoadOptions{}, ErrInvalid, "config/deploy.yml", 11, "servers_typo"},
		{"host index", with(strings.Replace(minimal, "  - 192.0.2.1\n", "  - 192.0.2.1\n  - [nested]\n", 1), nil), LoadOptions{}, ErrInvalid, "config/deploy.yml", 11, "servers[1]"},
		{"missing secret", map[string]string{"config/deploy.yml": minimal}, LoadOptions{}, ErrSecret, "config/deploy.yml", 6, "registry.password[0]"},
		{"command refused", with(minimal, map[string]string{".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=$(op read x)\n"}), LoadOptions{}, ErrUnsafe, ".kamal/secrets", 1, "KAMAL_REGISTRY_PASSWORD"},
		{"missing destination file", with(minimal, nil), LoadOptions{Destination: "prod"}, ErrMissingFile, "config/deploy.prod.yml", 0, ""},
		{"bad version", with(minimal, nil), LoadOptions{Version: "not a tag"}, ErrVersion, "", 0, ""},
		{"yaml syntax", with(minimal+"  bad: [\n", nil), LoadOptions{}, ErrSyntax, "config/deploy.yml", 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.files, tc.opts)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.kind)
			}
			es := asErrors(t, err)
			found := false
			for _, e := range es {
				if errors.Is(e, tc.kind) && e.File == tc.file && (tc.line == 0 || e.Line == tc.line) && (tc.path == "" || e.Path == tc.path) {
					found = true
				}
			}
			if !found {
				t.Errorf("no %v error at %s:%d %s in\n%v", tc.kind, tc.file, tc.line, tc.path, err)
			}
		})
	}
}

func TestLoad_AllowCommandSubstitution(t *testing.T) {
	files := map[string]string{"config/deploy.yml": minimal, ".kamal/secrets": "TOKEN=abc\nKAMAL_REGISTRY_PASSWORD=$(op read \"op://vault/${TOKEN}\")\n"}
	var ran []string
	c, err := load(t, files, LoadOptions{RunCommand: func(cmd string) (string, error) {
		ran = append(ran, cmd)
		return "from-command\n", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != 1 || ran[0] != `op read "op://vault/abc"` {
		t.Errorf("ran %q, want the command with ${TOKEN} expanded", ran)
	}
	if got := c.Registry.Password.Reveal(); got != "from-command" {
		t.Errorf("password = %q", got)
	}
	_, err = load(t, files, LoadOptions{RunCommand: func(string) (string, error) { return "", errors.New("exit status 1") }})
	if !errors.Is(err, ErrSecret) {
		t.Errorf("failing command: err = %v, want ErrSecret", err)
	}
}

func TestLoad_OversizeAndBombFailFast(t *testing.T) {
	big := minimal + "x-pad: \"" + strings.Repeat("a", MaxFileSize) + "\"\n"
	start := time.Now()
	_, err := load(t, map[string]string{"config/deploy.yml": big}, LoadOptions{})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: err = %v", err)
	}
	var b strings.Builder
	b.WriteString("x-0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d [", i, i)
		for j := 0; j < 10; j++ {
			fmt.Fprintf(&b, "*a%d,", i-1)
		}
		b.WriteString("x]\n")
	}
	_, err = load(t, map[string]string{"config/deploy.yml": minimal + b.String()}, LoadOptions{})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("alias bomb: err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestLoad_DestinationSecretsPrecedence(t *testing.T) {
	cfg := minimal + "env:\n  secret:\n    - A\n    - B\n"
	files := map[string]string{
		"config/deploy.yml":      cfg,
		"config/deploy.prod.yml": "servers:\n  - 192.0.2.9\n",
		".kamal/secrets-common":  "KAMAL_REGISTRY_PASSWORD=pw\nA=common\nB=common\n",
		".kamal/secrets.prod":    "B=prod\n",
		".kamal/secrets":         "A=base\nB=base\n",
	}
	c, err := load(t, files, LoadOptions{Destination: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("192.0.2.9")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Apps[0].EnvFile.Content.Reveal(); got != "A=common\nB=prod\n" {
		t.Errorf("with -d prod env file = %q", got)
	}
	c, err = load(t, files, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ = c.Plan("192.0.2.1")
	if got := p.Apps[0].EnvFile.Content.Reveal(); got != "A=base\nB=base\n" {
		t.Errorf("without -d env file = %q", got)
	}
}

func TestEnvFileEscape(t *testing.T) {
	c := &Config{secrets: map[string]string{"S": "a\"b\\c\nd#{x}é\x01"}}
	got := c.envFileContent(EnvSpec{Secret: []SecretRef{{Name: "N", Key: "S"}}})
	if want := "N=a\"b\\\\c\\nd#{x}é\\x01\n"; got != want {
		t.Errorf("got %q want %q", got, want)
	}
	if got := c.envFileContent(EnvSpec{}); got != "\n" {
		t.Errorf("empty env file = %q, want a single newline", got)
	}
}

func TestFingerprint(t *testing.T) {
	base := map[string]string{"config/deploy.yml": minimal + "env:\n  secret: [DB]\n", ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\nDB=$DB\n"}
	fp := func(db string, key []byte, extra string) string {
		files := map[string]string{}
		for k, v := range base {
			files[k] = v
		}
		files["config/deploy.yml"] += extra
		c, err := load(t, files, LoadOptions{FingerprintKey: key, SecretsEnv: map[string]string{"DB": db}})
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.Plan("192.0.2.1")
		if err != nil {
			t.Fatal(err)
		}
		return p.Apps[0].Fingerprint
	}
	a := fp("one", testKey, "")
	if a != fp("one", testKey, "") {
		t.Error("fingerprint is not deterministic")
	}
	if a == fp("two", testKey, "") {
		t.Error("secret value change does not change the fingerprint")
	}
	if a == fp("one", []byte("other key"), "") {
		t.Error("fingerprint does not depend on the key")
	}
	if a == fp("one", testKey, "labels:\n  x: y\n") {
		t.Error("label change does not change the fingerprint")
	}
	c, err := load(t, base, LoadOptions{FingerprintKey: []byte{}, SecretsEnv: map[string]string{"DB": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Plan("192.0.2.1"); !errors.Is(err, ErrNoFingerprintKey) {
		t.Errorf("Plan without key: err = %v", err)
	}
}

// TestSecrets_NeverInOutput loads every valid corpus case that has
// secrets and checks no secret value appears in any rendering: script,
// JSON, YAML, summary, or fmt of the plans.
func TestSecrets_NeverInOutput(t *testing.T) {
	checked := 0
	for _, dir := range []string{"valid-destination", "valid-env-tags", "valid-accessories", "valid-proxy-options", "valid-secret-alias-and-commands"} {
		c, err := loadCase(t, "testdata/corpus/"+dir)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		secrets := c.SecretValues()
		if len(secrets) == 0 {
			t.Fatalf("%s: no secrets", dir)
		}
		plans, err := c.Plans()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_ = WriteScript(&out, plans)
		_ = c.WriteSummary(&out)
		_ = c.WriteYAML(&out)
		js, err := json.Marshal(plans)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(js)
		fmt.Fprintf(&out, "%v %+v %#v", plans, plans, plans)
		for _, p := range plans {
			for _, ct := range append(p.Apps, p.Accessories...) {
				fmt.Fprintf(&out, "%v %+v %#v %s", *ct, *ct, *ct, ct.EnvFile.Content)
				if ct.EnvFile.Content.Reveal() == "\n" {
					continue
				}
				checked++
			}
		}
		fmt.Fprintf(&out, "%v %+v %#v", c.Registry, c.Registry, c.Registry)
		for _, s := range secrets {
			if strings.Contains(out.String(), s) {
				t.Errorf("%s: secret %q appears in output", dir, s)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no env file with secrets was checked")
	}
}

func TestSecrets_NotInErrors(t *testing.T) {
	files := map[string]string{
		"config/deploy.yml": minimal + "env:\n  secret: [A]\n",
		".kamal/secrets":    "KAMAL_REGISTRY_PASSWORD=$PW\nA=$(vault read ${PW})\n",
	}
	_, err := load(t, files, LoadOptions{SecretsEnv: map[string]string{"PW": "hunter2-secret"}})
	if err == nil {
		t.Fatal("want error")
	}
	if strings.Contains(err.Error(), "hunter2-secret") {
		t.Errorf("error leaks a secret: %v", err)
	}
}

func TestVersion(t *testing.T) {
	files := map[string]string{"config/deploy.yml": "x-capstan:\n  version: v7\n" + minimal, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}
	c, err := Load(mapFS(files), LoadOptions{Revision: testRevision})
	if err != nil {
		t.Fatal(err)
	}
	if c.Version.Value != "v7" || !strings.HasPrefix(c.Version.Source, "x-capstan.version (config/deploy.yml:2)") {
		t.Errorf("version = %+v", c.Version)
	}
	c, err = Load(mapFS(files), LoadOptions{Revision: testRevision, Version: "v8"})
	if err != nil || c.Version.Value != "v8" {
		t.Fatalf("--version: %v %+v", err, c)
	}
	files["config/deploy.yml"] = minimal
	c, err = Load(mapFS(files), LoadOptions{Revision: testRevision})
	if err != nil || c.Version.Value != testRevision || c.Image() != "org/app:"+testRevision {
		t.Fatalf("revision: %v %+v", err, c)
	}
	digest := "sha256:" + strings.Repeat("ab", 32)
	c, err = Load(mapFS(files), LoadOptions{Version: digest, FingerprintKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if c.Image() != "org/app@"+digest || c.ContainerName(c.Roles[0]) != "app-web-sha256-abababababab" {
		t.Errorf("digest: image %s name %s", c.Image(), c.ContainerName(c.Roles[0]))
	}
}

func TestSplitCmd(t *testing.T) {
	for in, want := range map[string]string{
		`bundle exec sidekiq -q default`: "bundle|exec|sidekiq|-q|default",
		`sh -c 'a && b'`:                 "sh|-c|a && b",
		`echo "x y" z\ w`:                "echo|x y|z w",
		`a=b#c`:                          "a=b#c",
		"a\\\nb \"c\\\nd\"":              "ab|cd", // line continuations
		`a\`:                             `a\`,    // a last backslash stays
		"run\n":                          "run",   // a trailing line break
	} {
		words, bad := splitCmd(in)
		if bad != "" || strings.Join(words, "|") != want {
			t.Errorf("splitCmd(%q) = %q, %q; want %q", in, words, bad, want)
		}
	}
	for _, in := range []string{"a && b", "a | b", "a; b", "a $X", "a `b`", `a "$X"`, "a > f", "a\n. /tmp/x"} {
		if _, bad := splitCmd(in); bad == "" {
			t.Errorf("splitCmd(%q) accepted shell syntax", in)
		}
	}
}

func TestConfig_ShortSecrets(t *testing.T) {
	cfg := minimal + "env:\n  secret:\n    - DB_PASSWORD\n    - API_KEY\n"
	c, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=x\nDB_PASSWORD=abcde\nAPI_KEY=abcdef\n"}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.ShortSecrets(), " "); got != "DB_PASSWORD KAMAL_REGISTRY_PASSWORD" {
		t.Errorf("ShortSecrets = %q", got)
	}
	literal := strings.Replace(minimal, "  password:\n    - KAMAL_REGISTRY_PASSWORD\n", "  password: pw\n", 1)
	c, err = load(t, map[string]string{"config/deploy.yml": literal}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.ShortSecrets(), " "); got != "registry.password" {
		t.Errorf("ShortSecrets with a literal password = %q", got)
	}
}
