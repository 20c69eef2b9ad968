package kamalproxy

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// FuzzParseList: whatever `kamal-proxy list` prints, ParseList returns an
// error wrapping proxy.ErrParse, or routes sorted by name, no more of them
// than there are lines, each with a valid service name and valid targets.
func FuzzParseList(f *testing.F) {
	transcript, err := os.ReadFile("testdata/list_transcript.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(transcript)
	for _, s := range []string{
		colour([][]string{header,
			{"shop-web-production", "shop.example.com,www.shop.example.com", "/", "0c95a080732f:3000", "running", "yes"},
			{"blog-web", "*", "/blog,/feed", "ee2b0e8dc9b7:80,e32501cf6556:80", "paused", "no"},
			{"api-web", "api.example.com", "/", "bb3c6b5ed0b7", "stopped", "no"},
		}),
		colour([][]string{header}),
		colour([][]string{{"Service", "Host", "Target", "State", "TLS"}, {"old-web", "*", "abc:80", "running", "no"}}),
		"Service  Target\r\napp-web  abc:80\r\n",
		"", "\n\n", "Error: dial unix /tmp/kamal-proxy.sock: connect: no such file or directory\n",
		"Service Service Target Target\nx y z:1 w:2\n",
		"Target Service\n",
		colour([][]string{header, {"app-web", "*", "/", "abc:99999", "running", "no"}}),
		colour([][]string{header, {"app-web", "*", "/", "abc:", "running", "no"}}),
		colour([][]string{header, {"äpp-wëb", "*", "/", "abc:80", "running", "no"}}),
		"\x1b[1mService\x1b[0m \x1b[1mTarget\x1b[0m\n\x1b[34mapp\x1b[0m    x:80\x00\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		routes, err := ParseList(out)
		if err != nil {
			if !errors.Is(err, proxy.ErrParse) {
				t.Fatalf("error %v does not wrap ErrParse", err)
			}
			return
		}
		if n := bytes.Count(out, []byte("\n")) + 1; len(routes) > n {
			t.Fatalf("%d routes from %d lines", len(routes), n)
		}
		if !slices.IsSortedFunc(routes, func(a, b proxy.LiveRoute) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatal("routes not sorted by name")
		}
		for _, r := range routes {
			if !proxy.ValidName(r.Name) {
				t.Fatalf("route name %q", r.Name)
			}
			for _, tg := range r.Targets {
				if err := tg.Validate(); err != nil {
					t.Fatalf("route %s: target %+v: %v", r.Name, tg, err)
				}
			}
		}
	})
}

// TestParseList_Hostile: service names and targets that are huge, hold
// NUL bytes, shell metacharacters or unicode, ports out of range and rows
// broken by a stray newline are refused with ErrParse, never carried into
// a deploy command.
func TestParseList_Hostile(t *testing.T) {
	huge := strings.Repeat("a", 64<<10)
	for name, row := range map[string][]string{
		"64 KB service":       {huge, "*", "/", "abc:80", "running", "no"},
		"64 KB target":        {"app-web", "*", "/", huge + ":80", "running", "no"},
		"NUL in service":      {"app\x00web", "*", "/", "abc:80", "running", "no"},
		"shell in service":    {"app;reboot", "*", "/", "abc:80", "running", "no"},
		"shell in target":     {"app-web", "*", "/", "$(reboot):80", "running", "no"},
		"unicode service":     {"äpp-wëb", "*", "/", "abc:80", "running", "no"},
		"port 0":              {"app-web", "*", "/", "abc:0", "running", "no"},
		"port 65536":          {"app-web", "*", "/", "abc:65536", "running", "no"},
		"negative port":       {"app-web", "*", "/", "abc:-1", "running", "no"},
		"empty target name":   {"app-web", "*", "/", ":80", "running", "no"},
		"ipv6-looking target": {"app-web", "*", "/", "[::1]:80", "running", "no"},
	} {
		t.Run(name, func(t *testing.T) {
			if routes, err := ParseList([]byte(colour([][]string{header, row}))); !errors.Is(err, proxy.ErrParse) {
				t.Errorf("err = %v, want ErrParse (routes %.200v)", err, routes)
			}
		})
	}
	t.Run("row cut by a newline", func(t *testing.T) {
		out := colour([][]string{header, {"app-web", "*", "/", "abc:80", "running", "no"}})
		out = strings.Replace(out, "abc:80", "ab\nc:80", 1)
		if _, err := ParseList([]byte(out)); !errors.Is(err, proxy.ErrParse) {
			t.Errorf("err = %v, want ErrParse", err)
		}
	})
}
