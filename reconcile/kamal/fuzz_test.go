package kamal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzLoad feeds arbitrary deploy.yml and secrets contents to Load. It
// must never panic, must return either a Config or an Errors value, and
// must finish quickly (alias bombs and huge inputs are refused early).
// The seed corpus is every configuration under testdata/corpus and
// testdata/erb-corpus; found
// crashers land in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	dirs, _ := filepath.Glob("testdata/corpus/*")
	erbDirs, _ := filepath.Glob("testdata/erb-corpus/*")
	dirs = append(dirs, erbDirs...)
	for _, d := range dirs {
		cfg, err := os.ReadFile(filepath.Join(d, "config/deploy.yml"))
		if err != nil {
			continue
		}
		sec, _ := os.ReadFile(filepath.Join(d, ".kamal/secrets"))
		f.Add(cfg, sec)
	}
	f.Add([]byte("a: &a [*a]\n"), []byte("A=$(x)\nB=${A}\n"))
	f.Add([]byte("<%= ENV.fetch('X', \"d\") -%>\n<%%\n<%- %>"), []byte("A='unterminated\n"))
	f.Fuzz(func(t *testing.T, cfg, secrets []byte) {
		files := mapFS(map[string]string{
			"config/deploy.yml":         string(cfg),
			"config/deploy.staging.yml": string(cfg),
			".kamal/secrets":            string(secrets),
			".kamal/secrets.staging":    string(secrets),
		})
		for _, dest := range []string{"", "staging"} {
			start := time.Now()
			c, err := Load(files, LoadOptions{Destination: dest, Revision: testRevision, FingerprintKey: testKey,
				LookupEnv: func(k string) (string, bool) { return "v-" + k, k != "UNSET" }})
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("Load took %v", d)
			}
			if err != nil {
				var es Errors
				if !errors.As(err, &es) || len(es) == 0 {
					t.Fatalf("error is %T %v, want non-empty Errors", err, err)
				}
				for _, e := range es {
					if e.Kind == nil || e.Msg == "" {
						t.Fatalf("error without kind or message: %#v", e)
					}
				}
				continue
			}
			if c == nil {
				t.Fatal("nil config without error")
			}
			plans, err := c.Plans()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range plans {
				for _, ct := range append(p.Apps, p.Accessories...) {
					if len(ct.Run.Argv) < 3 || ct.Fingerprint == "" {
						t.Fatalf("bad container %+v", ct)
					}
				}
			}
		}
	})
}
