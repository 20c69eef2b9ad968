package kamal

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// testRevisionTime is the commit time assumed by the ERB tests.
var testRevisionTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// erbFiles is the repository the File.read cases read.
var erbFiles = fstest.MapFS{
	".ruby-version":         {Data: []byte("3.3.0\n")},
	"config/image":          {Data: []byte("  myorg/app  \n")},
	"config/link":           {Data: []byte(".ruby-version"), Mode: fs.ModeSymlink},
	"linkdir":               {Data: []byte("config"), Mode: fs.ModeSymlink},
	"config/huge":           {Data: []byte(strings.Repeat("x", MaxERBFileRead+1))},
	"config/deploy.yml.erb": {Data: []byte("x")},
}

// erbCase is one template, its environment and the output Ruby's ERB
// (trim_mode "-") gives for it, or the sentinel of its error.
type erbCase struct {
	name string
	src  string
	env  map[string]string
	want string
	kind error // nil: must render to want
}

func runERB(t *testing.T, tc erbCase, ctx *erbContext) {
	t.Helper()
	if ctx == nil {
		ctx = &erbContext{revision: testRevision, revTime: testRevisionTime, fsys: erbFiles}
	}
	ctx.getenv = func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
	errs := &collector{}
	got, _, ok := renderERB("config/deploy.yml", tc.src, ctx, errs)
	if tc.kind == nil {
		if len(errs.errs) > 0 || !ok {
			t.Fatalf("%q: unexpected errors:\n%v", tc.src, errs.errs)
		}
		if got != tc.want {
			t.Fatalf("%q renders\n%q, want\n%q", tc.src, got, tc.want)
		}
		return
	}
	if !errors.Is(errs.result(), tc.kind) {
		t.Fatalf("%q: errors %v, want %v", tc.src, errs.errs, tc.kind)
	}
	for _, e := range errs.errs {
		if e.File != "config/deploy.yml" || e.Line < 1 {
			t.Errorf("error without FILE:LINE: %#v", e)
		}
		if errors.Is(e, ErrUnsafe) && !strings.Contains(e.Msg, "capstan") {
			t.Errorf("refusal without a hint: %s", e.Msg)
		}
	}
}

func TestRenderERB_PureExpressions(t *testing.T) {
	cases := []erbCase{
		{"or default", `<%= ENV["CPUS"] || "2" %>`, nil, "2", nil},
		{"or set", `<%= ENV["CPUS"] || "2" %>`, map[string]string{"CPUS": "4"}, "4", nil},
		{"empty string is truthy", `<%= ENV["CPUS"] || "2" %>`, map[string]string{"CPUS": ""}, "", nil},
		{"single quotes", `<%= ENV['VPS_IP'] || 'X' %>`, nil, "X", nil},
		{"ternary true", `<%= ENV["GC"] == "false" ? "" : "--enable-gc" %>`, map[string]string{"GC": "false"}, "", nil},
		{"ternary false", `<%= ENV["GC"] == "false" ? "" : "--enable-gc" %>`, nil, "--enable-gc", nil},
		{"interpolation with inner quotes", `"<%= "#{ENV["HOST"]}:5000" %>"`, map[string]string{"HOST": "h"}, `"h:5000"`, nil},
		{"interpolation of nil and int", `<%= "#{1}#{nil}x#{}" %>`, nil, "1x", nil},
		{"strip", `<%= ENV["X"].strip %>`, map[string]string{"X": " a \n"}, "a", nil},
		{"strip of nil", `<%= ENV["X"].strip %>`, nil, "", ErrInvalid},
		{"to_s of nil", `<%= ENV["X"].to_s.empty? %>`, nil, "true", nil},
		{"fetch default int", `<%= ENV.fetch("PORT", 3000).to_i + 1 %>`, nil, "3001", nil},
		{"fetch set to_i", `<%= ENV.fetch("PORT", 3000).to_i + 1 %>`, map[string]string{"PORT": "80"}, "81", nil},
		{"fetch empty is a value", `[<%= ENV.fetch("E") %>]`, map[string]string{"E": ""}, "[]", nil},
		{"fetch unset", `<%= ENV.fetch("E") %>`, nil, "", ErrInvalid},
		{"presence blank", `<%= ENV["A"].presence || "d" %>`, map[string]string{"A": " "}, "d", nil},
		{"presence set", `<%= ENV["A"].presence || "d" %>`, map[string]string{"A": "v"}, "v", nil},
		{"parentheses upcase", `<%= (ENV["A"] || "x").upcase %>`, nil, "X", nil},
		{"downcase", `<%= "MiXed".downcase %>`, nil, "mixed", nil},
		{"key?", `<%= ENV.key?("A") %>,<%= ENV.key?("B") %>`, map[string]string{"A": ""}, "true,false", nil},
		{"not", `<%= !ENV["A"] %>`, nil, "true", nil},
		{"and nil", `[<%= ENV["A"] && "yes" %>]`, nil, "[]", nil},
		{"and set", `<%= ENV["A"] && "yes" %>`, map[string]string{"A": "1"}, "yes", nil},
		{"literals", `<%= nil %>|<%= 42 %>|<%= true %>|<%= false %>`, nil, "|42|true|false", nil},
		{"words join", `<%= %w[a b c].join(",") %>`, nil, "a,b,c", nil},
		{"words paren and brace", `<%= %w(a b).join("-") %> <%= %w{c d}.join %>`, nil, "a-b cd", nil},
		{"array to_s", `<%= %w[a b] %> <%= [1, "a", nil] %>`, nil, `["a", "b"] [1, "a", nil]`, nil},
		{"split trailing empties", `<%= "a,b,,c,,".split(",") %>`, nil, `["a", "b", "", "c"]`, nil},
		{"split white space", `<%= ENV["H"].to_s.split.join("|") %>`, map[string]string{"H": " a  b\tc "}, "a|b|c", nil},
		{"single-quote escapes", `<%= 'a\nb\'c\\d' %>`, nil, `a\nb'c\d`, nil},
		{"double-quote escapes", `<%= "a\tb\"c\\d\#{x}" %>`, nil, "a\tb\"c\\d#{x}", nil},
		{"modifier if", `[<%= "x" if ENV["A"] %>]`, nil, "[]", nil},
		{"modifier unless", `[<%= "x" unless ENV["A"] %>]`, nil, "[x]", nil},
		{"equality across types", `<%= 1 == 1 %> <%= "1" == 1 %> <%= nil != false %>`, nil, "true false true", nil},
		{"nil? empty? blank? present?", `<%= ENV["A"].nil? %> <%= "".empty? %> <%= "  ".blank? %> <%= "x".present? %> <%= nil.blank? %>`, nil, "true true true true true", nil},
		{"to_i", `<%= "abc".to_i %> <%= "12abc".to_i %> <%= " -3".to_i %> <%= nil.to_i %>`, nil, "0 12 -3 0", nil},
		{"string plus", `<%= "a" + ENV.fetch("B", "b") + "c" %>`, nil, "abc", nil},
		{"plus type error", `<%= "a" + 1 %>`, nil, "", ErrInvalid},
		{"integer arithmetic", `<%= ENV["N"].to_i * 100 - 1 + 2 * 3 %>`, map[string]string{"N": "2"}, "205", nil},
		{"minus on strings", `<%= "a" - "b" %>`, nil, "", ErrInvalid},
		{"chomp lstrip rstrip", `[<%= "x\n".chomp %>|<%= "  y ".lstrip %>|<%= " z  ".rstrip %>]`, nil, "[x|y | z]", nil},
		{"array index", `<%= "a:b".split(":")[1] %><%= %w[a][5] %>`, nil, "b", nil},
		{"ruby comment inside tag", `<%= ENV["A"] || "d" # why %>`, nil, "d", nil},
		{"comment tag and literal", `<%# note %>x<%% y %>`, nil, "x<% y %>", nil},
		{"ENV with a non-string", `<%= ENV[1] %>`, nil, "", ErrInvalid},
		{"undefined variable", `<%= hostname %>`, nil, "", ErrInvalid},
		{"method on wrong type", `<%= 1.upcase %>`, nil, "", ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runERB(t, tc, nil) })
	}
}

func TestRenderERB_ControlFlow(t *testing.T) {
	cases := []erbCase{
		{"if else", "<% if ENV[\"X\"] %>\na: 1\n<% else %>\na: 2\n<% end %>\n", nil, "\na: 2\n\n", nil},
		{"if trimmed", "<% if ENV[\"X\"] -%>\na: 1\n<% else -%>\na: 2\n<% end -%>\nb: 3\n", map[string]string{"X": ""}, "a: 1\nb: 3\n", nil},
		{"elsif", "<% if ENV[\"M\"] == \"a\" -%>\nA\n<% elsif ENV[\"M\"] == \"b\" -%>\nB\n<% else -%>\nC\n<% end -%>\n", map[string]string{"M": "b"}, "B\n", nil},
		{"if then", "<% if(ENV[\"X\"]) then -%>\nyes\n<% end -%>\n", map[string]string{"X": "1"}, "yes\n", nil},
		{"unless", "<% unless ENV[\"PROD\"] -%>\ndebug: true\n<% end -%>\n", nil, "debug: true\n", nil},
		{"unless else", "<% unless ENV[\"PROD\"] -%>\nA\n<% else -%>\nB\n<% end -%>\n", map[string]string{"PROD": "1"}, "B\n", nil},
		{"each words", "env:\n<% %w[A B C].each do |k| -%>\n  <%= k %>: <%= ENV[k] || \"none\" %>\n<% end -%>\n", map[string]string{"B": "b"}, "env:\n  A: none\n  B: b\n  C: none\n", nil},
		{"each array literal", "<% [\"x\", \"y\"].each do |h| -%>\n- <%= h %>.example\n<% end -%>\n", nil, "- x.example\n- y.example\n", nil},
		{"each split env", "<% ENV.fetch(\"HOSTS\", \"\").split(\",\").each do |h| -%>\n- <%= h %>\n<% end -%>\n", map[string]string{"HOSTS": "a,b"}, "- a\n- b\n", nil},
		{"assignment", "<% host = ENV[\"H\"] || \"x\" -%>\nhost: <%= host %>\n", nil, "host: x\n", nil},
		{"assignment with modifier", "<% h = \"a\" %><% h = \"b\" if ENV[\"B\"] %><% h = \"c\" unless ENV[\"B\"] %><%= h %>", map[string]string{"B": "1"}, "b", nil},
		{"end with a comment", "<% if true %>x<% end # if %>", nil, "x", nil},
		{"assignment inside loop updates outer", "<% n = \"\" %><% %w[a b].each do |x| %><% n = n + x %><% end %><%= n %>", nil, "ab", nil},
		{"block variable is block-local", "<% %w[a].each do |x| %><% end %><%= x %>", nil, "", ErrInvalid},
		{"nested if in each", "<% %w[a b].each do |x| -%>\n<% if x == \"b\" -%>\n<%= x %>!\n<% end -%>\n<% end -%>\n", nil, "b!\n", nil},
		{"left trim", "a:\n  <%- if true -%>\n  b: 1\n  <%- end -%>\n", nil, "a:\n  b: 1\n", nil},
		{"each over a string", "<% \"ab\".each do |x| %><% end %>", nil, "", ErrInvalid},
		{"end without if", "a\n<% end %>\n", nil, "", ErrSyntax},
		{"if without end", "<% if true %>\na\n", nil, "", ErrSyntax},
		{"unsupported block", "<% ENV.each do |k, v| %>\n<%= k %>\n<% end %>\n", nil, "", ErrUnsafe},
		{"unclosed tag", "a: <%= ENV[\"X\"]\n", nil, "", ErrSyntax},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runERB(t, tc, nil) })
	}
}

func TestRenderERB_Revision(t *testing.T) {
	cases := []erbCase{
		{"rev-parse", "<%= `git rev-parse HEAD` %>", nil, testRevision + "\n", nil},
		{"rev-parse strip", "<%= `git rev-parse HEAD`.strip %>", nil, testRevision, nil},
		{"short", "<%= `git rev-parse --short HEAD`.strip %>", nil, "0123456", nil},
		{"describe without tags", "<%= `git describe --tags --always` %>", nil, "0123456\n", nil},
		{"log format", "<%= `git log --pretty=format:'%h' -n 1` %>", nil, "0123456", nil},
		{"percent x", "<%= %x(git rev-parse HEAD).strip %>", nil, testRevision, nil},
		{"interpolated", "<%= \"app:#{`git rev-parse --short HEAD`.strip}\" %>", nil, "app:0123456", nil},
		{"other git command", "<%= `git rev-parse HEAD && id` %>", nil, "", ErrUnsafe},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runERB(t, tc, nil) })
	}
	t.Run("describe with tags", func(t *testing.T) {
		runERB(t, erbCase{src: "<%= `git describe --tags --always`.strip %>", want: "v1.2.0-3-g0123456"},
			&erbContext{revision: testRevision, describe: "v1.2.0-3-g0123456"})
	})
	t.Run("no revision", func(t *testing.T) {
		runERB(t, erbCase{src: "<%= `git rev-parse HEAD` %>", kind: ErrVersion}, &erbContext{})
	})
}

func TestRenderERB_Files(t *testing.T) {
	cases := []erbCase{
		{"ruby version", "<%= File.read('.ruby-version').strip %>", nil, "3.3.0", nil},
		{"dot slash", "<%= File.read(\"./config/image\").strip %>", nil, "myorg/app", nil},
		{"parent", "<%= File.read('../secrets') %>", nil, "", ErrUnsafe},
		{"inner parent", "<%= File.read('config/../.ruby-version') %>", nil, "", ErrUnsafe},
		{"absolute", "<%= File.read('/etc/passwd') %>", nil, "", ErrUnsafe},
		{"symlink", "<%= File.read('config/link') %>", nil, "", ErrUnsafe},
		{"symlinked directory", "<%= File.read('linkdir/image') %>", nil, "", ErrUnsafe},
		{"missing", "<%= File.read('config/nope') %>", nil, "", ErrMissingFile},
		{"directory", "<%= File.read('config') %>", nil, "", ErrInvalid},
		{"too large", "<%= File.read('config/huge') %>", nil, "", ErrTooLarge},
		{"other File method", "<%= File.exist?('x') %>", nil, "", ErrUnsafe},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runERB(t, tc, nil) })
	}
}

func TestRenderERB_Time(t *testing.T) {
	cases := []erbCase{
		{"date", "<%= `date -u +%Y-%m-%dT%H:%M:%SZ` %>", nil, "2024-05-06T07:08:09Z\n", nil},
		{"date stamp", "<%= `date +%Y%m%d%H%M%S`.strip %>", nil, "20240506070809", nil},
		{"to_i", "<%= Time.now.to_i %>", nil, "1714979289", nil},
		{"utc iso8601", "<%= Time.now.utc.iso8601 %>", nil, "2024-05-06T07:08:09Z", nil},
		{"iso8601", "<%= Time.now.iso8601 %>", nil, "2024-05-06T07:08:09+00:00", nil},
		{"strftime", "<%= Time.now.strftime(\"%Y%m%d-%H%M\") %>", nil, "20240506-0708", nil},
		{"to_s", "<%= Time.now %>|<%= Time.now.utc %>", nil, "2024-05-06 07:08:09 +0000|2024-05-06 07:08:09 UTC", nil},
		{"unsupported directive", "<%= Time.now.strftime(\"%A\") %>", nil, "", ErrUnsafe},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runERB(t, tc, nil) })
	}
	t.Run("unknown time", func(t *testing.T) {
		runERB(t, erbCase{src: "<%= Time.now.to_i %>", kind: ErrInvalid}, &erbContext{revision: testRevision})
	})
}

func TestRenderERB_Refused(t *testing.T) {
	for _, src := range []string{
		"<%= %x(aws ecr get-login-password) %>",
		"<%= `gh auth status` %>",
		"<%= `./registry_password.sh`.strip %>",
		`<% require "dotenv"; Dotenv.load %>`,
		`<% require "dotenv" %>`,
		`<%= Dotenv.load %>`,
		`<%= Rails.application.credentials.dig(:x) %>`,
		`<%= Gem::Specification.find_by_name("x").version %>`,
		`<% ENV["X"] = "y" %>`,
		`<%= ENV.to_h %>`,
		`<%= system("id") %>`,
		`<%= eval "1" %>`,
		`<%= "x".send(:upcase) %>`,
		`<%= "x".instance_eval("1") %>`,
		`<%= RUBY_ENGINE %>`,
		`<%= $HOME %>`,
		`<%= @x %>`,
		`<%= 1.5 %>`,
		`<%= "x" =~ /y/ %>`,
		`<%= defined?(X) %>`,
		`<%= ENV %>`,
		`<%= Time.at(0) %>`,
		`<%= ENV["A"] and ENV["B"] %>`,
		`<%= %q(x) %>`,
		`<% 3.times do %>x<% end %>`,
		`<%= [1,2].map { |x| x } %>`,
	} {
		t.Run(src, func(t *testing.T) { runERB(t, erbCase{src: src, kind: ErrUnsafe}, nil) })
	}
}

// TestRenderERB_CommentLinesAreLenient: on a YAML comment line a tag that
// cannot be evaluated renders "" (Kamal's own kamal init template).
func TestRenderERB_CommentLinesAreLenient(t *testing.T) {
	src := "a: 1\n#   RUBY_VERSION: <%= ENV[\"RBENV_VERSION\"] || ENV[\"rvm_ruby_string\"] || \"#{RUBY_ENGINE}-#{RUBY_ENGINE_VERSION}\" %>\n  # x: <%= `id` %>\n# ok: <%= ENV[\"A\"] %>\nb: 2 # <%= ENV[\"A\"] %>\n"
	runERB(t, erbCase{src: src, env: map[string]string{"A": "v"}, want: "a: 1\n#   RUBY_VERSION: \n  # x: \n# ok: v\nb: 2 # v\n"}, nil)
	// Not a comment line: refused.
	runERB(t, erbCase{src: "a: <%= `id` %> # c\n", kind: ErrUnsafe}, nil)
}

// TestRenderERB_LineMap: output lines map back to their source lines
// through tags, trimmed tags and loops.
func TestRenderERB_LineMap(t *testing.T) {
	src := "a: 1\n<% %w[x y].each do |k| -%>\n<%= k %>: 2\n<% end -%>\nb: <%= \"m\\nn\" %>\nc: 3\n"
	errs := &collector{}
	got, lines, ok := renderERB("f", src, &erbContext{getenv: func(string) (string, bool) { return "", false }}, errs)
	if !ok || len(errs.errs) > 0 {
		t.Fatal(errs.errs)
	}
	if want := "a: 1\nx: 2\ny: 2\nb: m\nn\nc: 3\n"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	want := []int{1, 3, 3, 5, 5, 6, 7}
	if len(lines) != len(want) {
		t.Fatalf("lines %v, want %v", lines, want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Fatalf("lines %v, want %v", lines, want)
		}
	}
}

// TestRenderERB_Limits: loops, output and built text are bounded.
func TestRenderERB_Limits(t *testing.T) {
	words := "%w[" + strings.Repeat("a ", 200) + "]"
	loop3 := "<% " + words + ".each do |a| %><% " + words + ".each do |b| %><% " + words + ".each do |c| %>x<% end %><% end %><% end %>"
	runERB(t, erbCase{src: loop3, kind: ErrTooLarge}, nil)
	double := "<% s = \"xxxxxxxxxxxxxxxx\" %><% " + words + ".each do |a| %><% s = s + s %><% end %><%= s %>"
	runERB(t, erbCase{src: double, kind: ErrTooLarge}, nil)
	deep := "<%= " + strings.Repeat("(", 200) + "1" + strings.Repeat(")", 200) + " %>"
	runERB(t, erbCase{src: deep, kind: ErrUnsafe}, nil)
	nested := strings.Repeat("<% if true %>", 40) + "x" + strings.Repeat("<% end %>", 40)
	runERB(t, erbCase{src: nested, kind: ErrUnsafe}, nil)
	interp := "<%= " + strings.Repeat(`"#{`, 20) + "1" + strings.Repeat(`}"`, 20) + " %>"
	runERB(t, erbCase{src: interp, kind: ErrUnsafe}, nil)
}

// TestLoad_ERBErrorKeepsStructuralChecks: a refused tag is reported with
// FILE:LINE and the rest of the file is still validated; errors the
// structural checks would find on the failed tag's own line (it rendered
// as "") are not added.
func TestLoad_ERBErrorKeepsStructuralChecks(t *testing.T) {
	src := minimal + "env:\n  clear:\n    A: <%= `id` %>\nunknown_key: 1\n"
	_, err := load(t, map[string]string{"config/deploy.yml": src, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=x\n"}, LoadOptions{})
	es := asErrors(t, err)
	var unsafe, unknown bool
	for _, e := range es {
		switch {
		case errors.Is(e, ErrUnsafe) && e.Line == 13:
			unsafe = true
		case errors.Is(e, ErrInvalid) && e.Line == 14 && e.Path == "unknown_key":
			unknown = true
		case e.Line == 13:
			t.Errorf("consequence of the failed tag reported: %v", e)
		}
	}
	if !unsafe || !unknown {
		t.Errorf("want the refused tag at line 13 and the unknown key at line 14, got:\n%v", err)
	}
	// The same file with the tag on a comment line loads.
	ok := strings.Replace(src, "    A: <%= `id` %>\n", "    # A: <%= `id` %>\n    A: b\n", 1)
	ok = strings.Replace(ok, "unknown_key: 1\n", "", 1)
	if _, err := load(t, map[string]string{"config/deploy.yml": ok, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=x\n"}, LoadOptions{}); err != nil {
		t.Errorf("comment-line tag: %v", err)
	}
}
