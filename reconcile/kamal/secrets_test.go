package kamal

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// Kamal sets KAMAL_DESTINATION before it reads the secrets files (and
// deletes it without a destination, so $KAMAL_DESTINATION reads ""); it
// wins over the operator's environment and env file.
func TestLoad_KamalDestinationInSecrets(t *testing.T) {
	cfg := minimal + "env:\n  secret: [X, Y]\n"
	secrets := "KAMAL_REGISTRY_PASSWORD=pw\nX=$(echo dest-$KAMAL_DESTINATION)\nY=$KAMAL_DESTINATION\n"
	files := map[string]string{
		"config/deploy.yml":         cfg,
		"config/deploy.staging.yml": "servers:\n  - 192.0.2.9\n",
		".kamal/secrets.staging":    secrets,
		".kamal/secrets":            secrets,
	}
	var mu sync.Mutex
	var ran []string
	run := func(cmd string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		ran = append(ran, cmd)
		return strings.TrimPrefix(cmd, "echo ") + "\n", nil
	}
	stale := func(k string) (string, bool) {
		if k == "KAMAL_DESTINATION" {
			return "stale", true
		}
		return "", false
	}
	for dest, want := range map[string][2]string{"staging": {"dest-staging", "staging"}, "": {"dest-", ""}} {
		ran = nil
		c, err := load(t, files, LoadOptions{Destination: dest, RunCommand: run, LookupEnv: stale, SecretsEnv: map[string]string{"KAMAL_DESTINATION": "stale"}})
		if err != nil {
			t.Fatalf("destination %q: %v", dest, err)
		}
		if x, y := c.secret("X"), c.secret("Y"); x != want[0] || y != want[1] {
			t.Errorf("destination %q: X=%q Y=%q, want %q", dest, x, y, want)
		}
		if len(ran) != 1 || ran[0] != "echo "+want[0] {
			t.Errorf("destination %q: ran %q", dest, ran)
		}
	}
}

// An environment variable set to "" is a value, not "unset".
func TestLoad_EmptyVariableIsSet(t *testing.T) {
	files := map[string]string{"config/deploy.yml": minimal + "env:\n  secret: [A]\n", ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\nA=x${EMPTY}y\n"}
	lookup := func(k string) (string, bool) { return "", k == "EMPTY" }
	c, err := load(t, files, LoadOptions{LookupEnv: lookup})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.secret("A"); got != "xy" {
		t.Errorf("A = %q", got)
	}
	_, err = load(t, files, LoadOptions{})
	if !errors.Is(err, ErrSecret) || !strings.Contains(err.Error(), ".kamal/secrets:2: A: $EMPTY is not set") {
		t.Errorf("unset: %v", err)
	}
}

// A failing command is reported at FILE:LINE with the KEY, without the
// value or the expanded command line.
func TestLoad_CommandErrorNamesLineAndKey(t *testing.T) {
	files := map[string]string{"config/deploy.yml": minimal, ".kamal/secrets": "TOKEN=hunter2-token\n\nKAMAL_REGISTRY_PASSWORD=$(vault read $TOKEN)\n"}
	_, err := load(t, files, LoadOptions{RunCommand: func(cmd string) (string, error) {
		return "half-a-secret", errors.New("sh: " + cmd + ": exit status 2")
	}})
	es := asErrors(t, err)
	found := false
	for _, e := range es {
		if e.File == ".kamal/secrets" && e.Line == 3 && e.Path == "KAMAL_REGISTRY_PASSWORD" && errors.Is(e, ErrSecret) {
			found = true
		}
	}
	if !found || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "half-a") {
		t.Errorf("errors:\n%v", err)
	}
}

// SkipSecrets checks structure only: no secrets file is read, missing
// secrets are not errors, and Plan refuses.
func TestLoad_SkipSecrets(t *testing.T) {
	files := map[string]string{"config/deploy.yml": minimal + "env:\n  secret: [MISSING]\n", ".kamal/secrets": "A=$(rm -rf /)\nexport NOT_SET\n"}
	c, err := load(t, files, LoadOptions{SkipSecrets: true, RunCommand: func(string) (string, error) {
		t.Error("a command ran")
		return "", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Plans(); !errors.Is(err, ErrSecretsSkipped) {
		t.Errorf("Plans: %v", err)
	}
	_, err = load(t, map[string]string{"config/deploy.yml": minimal + "bogus: 1\n"}, LoadOptions{SkipSecrets: true})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("structural errors still reported: %v", err)
	}
}

func TestParseEnvFile(t *testing.T) {
	got, err := ParseEnvFile("ops.env", []byte("# ops\nexport PW=abc\nDB='x y'\nURL=\"db://$PW@h\"\nEMPTY=\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got["PW"] != "abc" || got["DB"] != "x y" || got["URL"] != "db://abc@h" || got["EMPTY"] != "" || len(got) != 4 {
		t.Errorf("got %q", got)
	}
	_, err = ParseEnvFile("ops.env", []byte("A=$(cat /etc/passwd)\nB=$HOME\n"))
	es := asErrors(t, err)
	if len(es) != 2 || !errors.Is(es[0], ErrUnsafe) || es[0].Line != 1 || es[0].Path != "A" || es[1].Line != 2 || !strings.Contains(es[1].Msg, "$HOME is not set earlier in this file") {
		t.Errorf("errors: %v", err)
	}
}
