package kamal

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// TestERBCorpus loads every configuration under testdata/erb-corpus:
// deploy.yml files written in the styles real projects use (Rails kamal
// init output, Laravel, Node, Phoenix, Django, option lists built with
// each/if, destinations). Each case's erb.golden holds the ERB output of
// its config files, then the load result: the summary for valid-* (which
// must load), the error lines for refused-* (which must be refused with
// ErrUnsafe AND still report the structural ErrInvalid errors of the same
// file).
func TestERBCorpus(t *testing.T) {
	dirs, err := filepath.Glob("testdata/erb-corpus/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 30 {
		t.Errorf("ERB corpus has %d cases, want at least 30", len(dirs))
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			opts := caseLoadOptions(t, dir)
			fsys := os.DirFS(dir)
			var b strings.Builder
			files := []string{DefaultConfigFile}
			if opts.Destination != "" {
				files = append(files, strings.TrimSuffix(DefaultConfigFile, ".yml")+"."+opts.Destination+".yml")
			}
			for _, f := range files {
				src, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(src), "<%") {
					continue
				}
				out, _, _ := renderERB(f, string(src), opts.erbContext(fsys), &collector{})
				b.WriteString("# " + path.Base(f) + " rendered\n" + out)
			}
			b.WriteString("---\n")
			c, err := Load(fsys, opts)
			switch {
			case strings.HasPrefix(name, "valid-"):
				if err != nil {
					t.Fatalf("want a valid config, got:\n%v", err)
				}
				if err := c.WriteSummary(&b); err != nil {
					t.Fatal(err)
				}
			case strings.HasPrefix(name, "refused-"):
				if !errors.Is(err, ErrUnsafe) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("want ErrUnsafe and the structural ErrInvalid errors, got:\n%v", err)
				}
				var es Errors
				errors.As(err, &es)
				b.WriteString(strings.Join(es.Lines(), "\n") + "\n")
			default:
				t.Fatalf("case directory must start with valid- or refused-")
			}
			compareGolden(t, filepath.Join(dir, "erb.golden"), []byte(b.String()))
		})
	}
}
