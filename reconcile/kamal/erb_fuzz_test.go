package kamal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzRenderERB feeds arbitrary templates to the ERB renderer. It must
// never panic, must finish quickly, must keep its output within
// MaxFileSize, must locate every error (FILE:LINE with a sentinel) and,
// when it renders, must map every output line to a source line.
// Seeds: the ERB corpus and the constructs of the golden tests.
func FuzzRenderERB(f *testing.F) {
	dirs, _ := filepath.Glob("testdata/erb-corpus/*")
	for _, d := range dirs {
		if src, err := os.ReadFile(filepath.Join(d, "config/deploy.yml")); err == nil {
			f.Add(string(src))
		}
	}
	for _, s := range []string{
		`<%= "#{ENV["A"] || "x"}:#{1 + 2 * 3}" %>`,
		"<% %w[a b].each do |k| -%>\n<% if k == \"a\" %><%= k.upcase %><% elsif k %>b<% else %>c<% end %>\n<% end -%>\n",
		"<%= `git rev-parse --short HEAD`.strip %> <%= Time.now.utc.strftime(\"%F %T\") %> <%= File.read('.ruby-version') %>",
		"<% x = [1, nil, \"a\"] %><%= x[1].to_s.split(\",\").join %><%= x.empty? ? 1 : 2 %>",
		"# <%= `id` %>\n<%- unless ENV.key?('A') -%>\n<%# c %><%% %>\n<% end %>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > MaxFileSize {
			return
		}
		ctx := &erbContext{revision: testRevision, revTime: testRevisionTime, fsys: erbFiles,
			getenv: func(k string) (string, bool) { return "v-" + k, !strings.HasPrefix(k, "U") }}
		errs := &collector{}
		start := time.Now()
		out, lines, ok := renderERB("config/deploy.yml", src, ctx, errs)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("renderERB took %v", d)
		}
		if len(out) > MaxFileSize {
			t.Fatalf("output of %d bytes", len(out))
		}
		for _, e := range errs.errs {
			if e.Kind == nil || e.Msg == "" || e.Line < 1 || e.File != "config/deploy.yml" {
				t.Fatalf("error without kind, message or location: %#v", e)
			}
		}
		if ok && lines != nil && len(lines) != strings.Count(out, "\n")+1 {
			t.Fatalf("%d line entries for %d output lines", len(lines), strings.Count(out, "\n")+1)
		}
	})
}
