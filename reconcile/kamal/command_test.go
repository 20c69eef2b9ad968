package kamal

import "testing"

func TestRubyShellEscape(t *testing.T) {
	for in, want := range map[string]string{
		"10m":        `"10m"`,
		"a$b":        `"a\$b"`,
		"${HOST}":    `"${HOST}"`,
		"say \"hi\"": `"say \"hi\""`,
		"`id`":       "\"\\`id\\`\"",
		"#{x} #y":    `"\#{x} #y"`,
		"café":       `"caf"é`,
		"a\nb\\":     `"a\nb\\"`,
		"":           `""`,
	} {
		if got := rubyShellEscape(in); got != want {
			t.Errorf("rubyShellEscape(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain-word_1.2:3=x": "plain-word_1.2:3=x",
		"two words":          "'two words'",
		"it's":               `'it'\''s'`,
		"$PWD/app dir":       `"$PWD"/'app dir'`,
		"":                   "''",
	} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCommand_StringKeepsArgv(t *testing.T) {
	c := newCmd("docker", "run").kv("--env", "A", "x y").kv("--label", "destination", "").add(plain, HomePrefix+"svc/data:/data").build()
	if got, want := c.String(), `docker run --env A="x y" --label destination $PWD/svc/data:/data`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got := ExpandHome(c.Argv, "/root/")[6]; got != "/root/svc/data:/data" {
		t.Errorf("ExpandHome = %q", got)
	}
	if c.Argv[3] != "A=x y" || c.Argv[5] != "destination" {
		t.Errorf("argv = %q", c.Argv)
	}
}

// TestCommand_Argumentize pins Kamal's Utils.argumentize (2.10+): a present
// value is dumped in double quotes even when it needs no quoting, the
// boolean false is printed bare as KEY=false, and a blank value (nil, "",
// only white space) becomes the bare KEY. The argv is what Docker gets.
func TestCommand_Argumentize(t *testing.T) {
	for _, tc := range []struct {
		kv         KV
		line, argv string
	}{
		{KV{Key: "K", Value: "v"}, `--env K="v"`, "K=v"},
		{KV{Key: "K", Value: "false"}, `--env K="false"`, "K=false"},
		{KV{Key: "K", Value: "false", isFalse: true}, `--env K=false`, "K=false"},
		{KV{Key: "K", Value: "true"}, `--env K="true"`, "K=true"},
		{KV{Key: "K", Value: "0"}, `--env K="0"`, "K=0"},
		{KV{Key: "K", Value: ""}, `--env K`, "K"},
		{KV{Key: "K", Value: "   "}, `--env K`, "K"},
		{KV{Key: "K", Value: "\t\n"}, `--env K`, "K"},
		{KV{Key: "K", Value: "\u00a0\u3000"}, `--env K`, "K"},
		{KV{Key: "K", Value: " x "}, `--env K=" x "`, "K= x "},
		{KV{Key: "K", Value: "${HOST}"}, `--env K="${HOST}"`, "K=${HOST}"},
	} {
		c := newCmd().pair("--env", tc.kv).build()
		if got := c.String(); got != tc.line {
			t.Errorf("%+v: line %s, want %s", tc.kv, got, tc.line)
		}
		if got := c.Argv[1]; got != tc.argv {
			t.Errorf("%+v: argv %q, want %q", tc.kv, got, tc.argv)
		}
	}
}
