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
	c := newCmd("docker", "run").kv("--env", "A", "x y").kv("--label", "destination", "").add(pwdVolume, HomePrefix+"svc/data:/data").build()
	if got, want := c.String(), `docker run --env A="x y" --label destination $(pwd)/svc/data:/data`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got := ExpandHome(c.Argv, "/root/")[6]; got != "/root/svc/data:/data" {
		t.Errorf("ExpandHome = %q", got)
	}
	if c.Argv[3] != "A=x y" || c.Argv[5] != "destination" {
		t.Errorf("argv = %q", c.Argv)
	}
}
