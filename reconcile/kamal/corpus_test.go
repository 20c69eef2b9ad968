package kamal

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

// testKey is the fingerprint key of every golden test.
var testKey = []byte("capstan-test-key")

// testRevision is the git revision assumed when a case sets no version.
const testRevision = "0123456789abcdef0123456789abcdef01234567"

// caseOptions is testdata/corpus/*/case.json.
type caseOptions struct {
	Config        string            `json:"config"`
	Destination   string            `json:"destination"`
	Version       string            `json:"version"`
	Revision      *string           `json:"revision"`
	Env           map[string]string `json:"env"`
	SecretsEnv    map[string]string `json:"secrets_env"`
	AllowCommands bool              `json:"allow_commands"`
	// Describe is what `git describe --tags --always` answers.
	Describe string `json:"describe"`
}

func loadCase(t *testing.T, dir string) (*Config, error) {
	t.Helper()
	return Load(os.DirFS(dir), caseLoadOptions(t, dir))
}

// caseLoadOptions reads dir/case.json into LoadOptions; the revision
// time is testRevisionTime.
func caseLoadOptions(t *testing.T, dir string) LoadOptions {
	t.Helper()
	var co caseOptions
	if data, err := os.ReadFile(filepath.Join(dir, "case.json")); err == nil {
		if err := json.Unmarshal(data, &co); err != nil {
			t.Fatalf("case.json: %v", err)
		}
	}
	rev := testRevision
	if co.Revision != nil {
		rev = *co.Revision
	}
	opts := LoadOptions{
		ConfigFile:       co.Config,
		Destination:      co.Destination,
		Version:          co.Version,
		Revision:         rev,
		RevisionTime:     testRevisionTime,
		RevisionDescribe: co.Describe,
		SecretsEnv:       co.SecretsEnv,
		FingerprintKey:   testKey,
		LookupEnv: func(k string) (string, bool) {
			v, ok := co.Env[k]
			return v, ok
		},
	}
	if co.AllowCommands {
		// Never a real shell in tests: a fake that echoes the command.
		opts.RunCommand = func(cmd string) (string, error) { return "output-of(" + cmd + ")\n", nil }
	}
	return opts
}

// renderGolden is what render.golden holds for a valid case.
func renderGolden(t *testing.T, c *Config) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := c.WriteSummary(&b); err != nil {
		t.Fatal(err)
	}
	b.WriteString("---\n")
	plans, err := c.Plans()
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteScript(&b, plans); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCorpus loads every configuration under testdata/corpus. Directories
// named valid-* must load and render to render.golden; invalid-* must fail
// with exactly the lines of errors.golden.
func TestCorpus(t *testing.T) {
	dirs, err := filepath.Glob("testdata/corpus/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 30 {
		t.Errorf("corpus has %d cases, want at least 30", len(dirs))
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			c, err := loadCase(t, dir)
			valid := strings.HasPrefix(name, "valid-")
			if !valid && !strings.HasPrefix(name, "invalid-") {
				t.Fatalf("case directory must start with valid- or invalid-")
			}
			var got []byte
			var golden string
			if valid {
				if err != nil {
					t.Fatalf("want a valid config, got:\n%v", err)
				}
				got, golden = renderGolden(t, c), filepath.Join(dir, "render.golden")
			} else {
				if err == nil {
					t.Fatalf("want errors, config loaded")
				}
				var es Errors
				if !errors.As(err, &es) {
					t.Fatalf("error is %T, want kamal.Errors", err)
				}
				got, golden = []byte(strings.Join(es.Lines(), "\n")+"\n"), filepath.Join(dir, "errors.golden")
			}
			compareGolden(t, golden, got)
		})
	}
}

func compareGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update refreshes it)\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}
