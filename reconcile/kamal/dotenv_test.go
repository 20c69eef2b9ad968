package kamal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// parseForTest evaluates text as a secrets file with env as Ruby's ENV.
func parseForTest(text string, env map[string]string, run func(string) (string, error)) (*dotenvFile, error) {
	errs := &collector{}
	f := newDotenvFile(".kamal/secrets", text, errs)
	f.env = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f.run, f.unset, f.refused = run, "(test)", "(test)"
	evalDotenv([]*dotenvFile{f})
	return f, errs.result()
}

// dotenvRules is the table of what Kamal 2.12 reads from a secrets file:
// Ruby dotenv 3.2's Dotenv::Parser and Substitutions::Variable with
// Kamal's InlineCommandSubstitution (Dotenv.parse(file, overwrite: true)).
// Expected values were derived by reading the gem's source (parser.rb,
// substitutions/variable.rb, Kamal's inline_command_substitution.rb) and
// agree with the outputs of real Ruby published by two ports that test
// against MRI. "!" marks a key capstan refuses to use where dotenv would
// substitute "" for an unset variable (capstan's one deliberate
// difference: the value would be wrong, so the secret is reported).
var dotenvRules = []struct {
	rule string
	text string
	env  map[string]string
	want map[string]string // every key the file defines
}{
	{"comment lines and blank lines are skipped", "# A=1\n\n   # B=2\nC=3\n", nil, map[string]string{"C": "3"}},
	{"export prefix", "export A=1\nexport  B='2'\n", nil, map[string]string{"A": "1", "B": "2"}},
	{"export KEY of an earlier key is a check only", "A=2\nexport A\n", nil, map[string]string{"A": "2"}},
	{"a bare KEY line sets KEY to \"\" (dotenv 3.2: separator and value optional)", "JUSTKEY\nA=1 # c\n", nil, map[string]string{"JUSTKEY": "", "A": "1"}},
	{"a bare KEY line after KEY=v sets it to \"\"", "A=1\nA\n", nil, map[string]string{"A": ""}},
	{"lines that are not KEY=value are ignored", "lol$wut\nnot a line\n- x\nA=1\n", nil, map[string]string{"A": "1"}},
	{"KEY: value needs a space after the colon", "A:1\nB: 2\n", nil, map[string]string{"B": "2"}},
	{"keys may contain dots; values may contain =", "FOO.BAR=x\na=1=2\nb==c\n", nil, map[string]string{"FOO.BAR": "x", "a": "1=2", "b": "=c"}},
	{"spaces around = and the value are dropped", "  A = x  \nB=\tval\t\nC=\n", nil, map[string]string{"A": "x", "B": "val", "C": ""}},
	{"an unquoted value ends at #", "A=v #c\nB=v#c\nC=#c\n", nil, map[string]string{"A": "v", "B": "v", "C": ""}},
	{"# inside quotes is kept", "A=\"b#c\" # c\nB='b#c'\n", nil, map[string]string{"A": "b#c", "B": "b#c"}},
	{"single quotes are literal", `A='$HOME \n \\ \'x'` + "\n", map[string]string{"HOME": "/h"}, map[string]string{"A": `$HOME \n \\ \'x`}},
	{"single quotes may span lines", "A='one\ntwo'\nB=1\n", nil, map[string]string{"A": "one\ntwo", "B": "1"}},
	{"double quotes: \\n and \\r keep their backslash (dotenv 3)", `A="a\nb\rc"` + "\n" + `B="a\\nb"` + "\n", nil, map[string]string{"A": `a\nb\rc`, "B": `a\nb`}},
	{"double quotes: other backslashes are dropped", `A="x\"y\tz\\w"` + "\n", nil, map[string]string{"A": `x"ytz\w`}},
	{"DOTENV_LINEBREAK_MODE=legacy in the file turns \\n into a newline", "DOTENV_LINEBREAK_MODE=legacy\nA=\"a\\nb\\rc\"\n", nil, map[string]string{"DOTENV_LINEBREAK_MODE": "legacy", "A": "a\nb\rc"}},
	{"DOTENV_LINEBREAK_MODE=legacy in the environment too", "A=\"a\\nb\"\nB=a\\nb\n", map[string]string{"DOTENV_LINEBREAK_MODE": "legacy"}, map[string]string{"A": "a\nb", "B": "anb"}},
	{"double quotes may span lines", "A=\"multi\nline\"\nB=1\n", nil, map[string]string{"A": "multi\nline", "B": "1"}},
	{"an unterminated quote is read literally", "A=\"abc\nB='x\n", nil, map[string]string{"A": `"abc`, "B": "'x"}},
	{"an unterminated quote does not swallow later lines without a quote", "A=\"abc\nB=\"def\"\n", nil, map[string]string{"A": `"abc`, "B": "def"}},
	{"text after a closing quote makes the value unquoted", `A="a" extra` + "\n" + `B="x" "y"` + "\n", nil, map[string]string{"A": `"a" extra`, "B": `x" "y`}},
	{"unquoted values drop backslashes too", `A=bar\ bar` + "\n" + `B=a\nb` + "\n", nil, map[string]string{"A": "bar bar", "B": "anb"}},
	{"an empty value followed by a quoted line takes it", "A=\n\"q\"\nB=1\n", nil, map[string]string{"A": "q", "B": "1"}},
	{"$VAR and ${VAR} from earlier keys, then the environment", "A=x\nB=${A}/p\nC=$A-$E\nD=\"$A\"\n", map[string]string{"E": "env"}, map[string]string{"A": "x", "B": "x/p", "C": "x-env", "D": "x"}},
	{"braces need not balance", "A=x\nB=${A\nC=$A}y\n", nil, map[string]string{"A": "x", "B": "x", "C": "xy"}},
	{"names are case-insensitive and greedy", "A=x\nlow=l\nB=$low-$A\n", nil, map[string]string{"A": "x", "low": "l", "B": "l-x"}},
	{"${VAR:-default} substitutes VAR and keeps the rest", "A=x\nB=${A:-d}\n", nil, map[string]string{"A": "x", "B": "x:-d}"}},
	{"a lone $ and ${} stay", "A=\"a $ ${} $\"\n", nil, map[string]string{"A": "a $ ${} $"}},
	{"escaped \\$ is a literal $", `A="foo\$BAR"` + "\n" + `B="b\$ \$\$"` + "\n" + `C=\${X}` + "\n", nil, map[string]string{"A": "foo$BAR", "B": "b$ $$", "C": "${X}"}},
	{"a variable set to \"\" is a value", "A=[$EMPTY]\n", map[string]string{"EMPTY": ""}, map[string]string{"A": "[]"}},
	{"a later assignment does not change earlier uses", "A=1\nB=$A\nA=2\nC=$A\n", nil, map[string]string{"A": "2", "B": "1", "C": "2"}},
	{"substituted values are not scanned again", "A='$B'\nB=b\nC=$A\n", nil, map[string]string{"A": "$B", "B": "b", "C": "$B"}},
	{"escaped \\$(…) and unbalanced or empty $( stay text", `A=\$(x)` + "\n" + `B=\$(x` + "\n" + "C=$(oops\nD=$()\n", nil, map[string]string{"A": "$(x)", "B": `\$(x`, "C": "$(oops", "D": "$()"}},
	{"CRLF and CR line ends", "A=1\r\nB=2\rC=3\n", nil, map[string]string{"A": "1", "B": "2", "C": "3"}},
	{"a UTF-8 byte order mark is dropped", "\ufeffA=1\n", nil, map[string]string{"A": "1"}},
	{"non-ASCII values are kept", "A=\"héllo wörld\"\n", nil, map[string]string{"A": "héllo wörld"}},
}

func TestDotenv_Rules(t *testing.T) {
	for _, tc := range dotenvRules {
		t.Run(tc.rule, func(t *testing.T) {
			f, err := parseForTest(tc.text, tc.env, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k, e := range f.entries {
				if e.problem != nil {
					t.Errorf("%s: problem %v", k, e.problem)
				}
				got[k] = e.value
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%q\n got %q\nwant %q", tc.text, got, tc.want)
			}
		})
	}
}

// Where dotenv substitutes "" for an unset variable, capstan keeps the
// entry but marks it unusable; the message names the variable unless it
// came from command output (then it is part of a secret).
func TestDotenv_UnsetVariables(t *testing.T) {
	run := func(string) (string, error) { return "pa$sword\n", nil }
	f, err := parseForTest("A=x\nB=$Ay\nC=robot$$deployer\nD=$(get)\nE=${UNSET}\nF=$E\n", nil, run)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"B": "$Ay is not set", "C": "$deployer is not set", "D": "output of a command substitution", "E": "$UNSET is not set", "F": "$UNSET is not set"} {
		e := f.entries[key]
		if e.problem == nil || !strings.Contains(e.problem.Error(), want) || !errors.Is(e.kind, ErrSecret) {
			t.Errorf("%s: problem %v, want %q", key, e.problem, want)
		}
	}
	if p := f.entries["D"].problem.Error(); strings.Contains(p, "sword") {
		t.Errorf("problem names part of the output: %s", p)
	}
	if e := f.entries["A"]; e.problem != nil || e.value != "x" {
		t.Errorf("A = %q, %v", e.value, e.problem)
	}
}

func TestDotenv_FormatErrors(t *testing.T) {
	_, err := parseForTest("A=1\nexport NOT_SET\n", nil, nil)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Line != 2 || es[0].Path != "NOT_SET" || !errors.Is(err, ErrSyntax) {
		t.Errorf("export of an unset key: %v", err)
	}
	if _, err := parseForTest("A=\xff\n", nil, nil); !errors.Is(err, ErrSyntax) {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

func TestDotenv_Commands(t *testing.T) {
	var mu sync.Mutex
	var scripts []string
	run := func(s string) (string, error) {
		mu.Lock()
		scripts = append(scripts, s)
		mu.Unlock()
		switch s {
		case "fetch":
			return `{"k":"v"}` + "\n", nil
		case "two-lines":
			return "x\n\n", nil
		case "home":
			return "at $HOME", nil
		case "fail":
			return "leaked-out", errors.New("exit status 3 running fail")
		}
		return "<" + s + ">\n", nil
	}
	text := "T=abc\n" +
		"P=$(op read \"op://v/${T}\")\n" + // ${T} substituted before running
		"S=$(fetch)\n" +
		"X=$(extract $S)\n" + // waits for S
		"Y=$(echo \\$HOME)-$(echo dest-$KAMAL_DESTINATION)\n" +
		"Z=$(two-lines)\n" + // chomp drops one newline
		"H=$(home)\n" + // command output goes through the variable pass
		"N=$(echo (nested) parens)\n" +
		"Q='$(not run)'\n" +
		"F=$(fail)\n"
	f, err := parseForTest(text, map[string]string{"HOME": "/h", "KAMAL_DESTINATION": "staging"}, run)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"T": "abc", "P": `<op read "op://v/abc">`, "S": `{"k":"v"}`, "X": `<extract {"k":"v"}>`,
		"Y": "<echo /h>-<echo dest-staging>", // ran "echo $HOME"; its output went through the variable pass "Z": "x\n", "H": "at /h", "N": "<echo (nested) parens>", "Q": "$(not run)",
	}
	for k, w := range want {
		if e := f.entries[k]; e.value != w || e.problem != nil {
			t.Errorf("%s = %q (%v), want %q", k, e.value, e.problem, w)
		}
	}
	e := f.entries["F"]
	if e.problem == nil || !errors.Is(e.kind, ErrSecret) || !strings.Contains(e.problem.Error(), "$(fail) failed: exit status 3 running …") {
		t.Errorf("F: %v", e.problem)
	}
	sort.Strings(scripts)
	if i := sort.SearchStrings(scripts, "echo $HOME"); i == len(scripts) || scripts[i] != "echo $HOME" {
		t.Errorf("\\$HOME in a command reaches the shell as $HOME: ran %q", scripts)
	}
	if len(scripts) != 9 {
		t.Errorf("ran %d commands, want 9 (each once): %q", len(scripts), scripts)
	}

	// Refused without a runner, naming the command as written.
	f, _ = parseForTest("A=$(op read ${T})\n", nil, nil)
	if e := f.entries["A"]; e.problem == nil || !errors.Is(e.kind, ErrUnsafe) || !strings.Contains(e.problem.Error(), "$(op read ${T}) is refused") {
		t.Errorf("refused: %v", e.problem)
	}
}

// Independent commands run at the same time: each of these blocks until
// all three have started, which would time out if they ran one after
// another. A dependent command still waits for the one it uses.
func TestDotenv_CommandsRunConcurrently(t *testing.T) {
	var started atomic.Int32
	all := make(chan struct{})
	run := func(s string) (string, error) {
		if strings.HasPrefix(s, "slow") {
			if started.Add(1) == 3 {
				close(all)
			}
			select {
			case <-all:
			case <-time.After(5 * time.Second):
				return "", errors.New("ran one after another")
			}
		}
		return s, nil
	}
	f, err := parseForTest("A=$(slow a)\nB=$(slow b)\nC=$(slow c)\nD=$(use $A$B$C)\n", nil, run)
	if err != nil {
		t.Fatal(err)
	}
	if e := f.entries["D"]; e.problem != nil || e.value != "use slow aslow bslow c" {
		t.Errorf("D = %q, %v", e.value, e.problem)
	}
}

// The values do not depend on the order in which commands finish.
func TestDotenv_CommandsDeterministic(t *testing.T) {
	text := "A=$(a)\nB=$(b)-$(c)\nC=$(d $A)\nD=$B$C\n"
	var first map[string]string
	for range 20 {
		run := func(s string) (string, error) {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			return "[" + s + "]", nil
		}
		f, err := parseForTest(text, nil, run)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for k, e := range f.entries {
			got[k] = e.value
		}
		if first == nil {
			first = got
			if got["D"] != "[b]-[c][d [a]]" {
				t.Fatalf("D = %q", got["D"])
			}
		} else if fmt.Sprint(got) != fmt.Sprint(first) {
			t.Fatalf("run differs: %v vs %v", got, first)
		}
	}
}

func TestSecretsEnviron(t *testing.T) {
	env := []string{"A=1", "KAMAL_DESTINATION=stale", "B=2"}
	if got := strings.Join(SecretsEnviron(env, "staging"), " "); got != "A=1 B=2 KAMAL_DESTINATION=staging" {
		t.Errorf("with destination: %s", got)
	}
	if got := strings.Join(SecretsEnviron(env, ""), " "); got != "A=1 B=2" {
		t.Errorf("without: %s", got)
	}
}

// FuzzDotenv feeds arbitrary text to the secrets parser with a command
// runner whose output holds a marker secret (and a $NAME that dotenv would
// substitute). It must not panic, must finish quickly, and no problem
// message may contain the command output.
func FuzzDotenv(f *testing.F) {
	for _, tc := range dotenvRules {
		f.Add(tc.text)
	}
	f.Add("A=$(a $(b) \\) (c))\nB=\"$A\\n${A:-x}\"\nexport B\nexport C\n")
	f.Add("S=$(fetch)\nX=$(extract $S)\nY=$X$(two)$Y\n")
	const marker = "zq7-secret-output"
	f.Fuzz(func(t *testing.T, text string) {
		run := func(s string) (string, error) {
			if len(s)%3 == 0 {
				return marker, errors.New("exit status 1")
			}
			return marker + "$Q\n", nil
		}
		start := time.Now()
		file, _ := parseForTest(text, map[string]string{"HOME": "/h"}, run)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
		for k, e := range file.entries {
			if k == "" || !e.done {
				t.Fatalf("entry %q done=%v", k, e.done)
			}
			if e.problem != nil && strings.Contains(e.problem.Error(), marker) && !strings.Contains(text, marker) {
				t.Fatalf("problem leaks command output: %v", e.problem)
			}
		}
	})
}
