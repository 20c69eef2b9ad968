package forge

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var when = time.Date(2026, 11, 30, 1, 2, 3, 0, time.UTC)

func TestRenderComment_Plan(t *testing.T) {
	plan := "web: 2 hosts\n  ~ app-web on 10.0.0.1: image 1.2 -> 1.3\n```\n# a fence inside the plan\n````\nend"
	body := RenderComment(Comment{App: "web", SHA: "6dcb09b5b57875f334f61aebed695e2e4193db5e", Plan: plan,
		Jobs: []string{"migrate", "cache`warm"}, Time: when, Key: "web"})
	if !strings.HasPrefix(body, Marker("web")+"\n") {
		t.Errorf("no marker line first:\n%s", body)
	}
	if !strings.Contains(body, "capstan plan for `web` at `6dcb09b`") {
		t.Errorf("heading missing:\n%s", body)
	}
	// The plan's longest backtick run is 4: the fence is 5, and the whole
	// plan sits between the opening and the closing fence.
	open := "`````text\n"
	i := strings.Index(body, open)
	if i < 0 {
		t.Fatalf("no 5-backtick text fence:\n%s", body)
	}
	rest := body[i+len(open):]
	end := strings.Index(rest, "\n`````\n")
	if end < 0 || rest[:end] != plan {
		t.Fatalf("the plan is not exactly inside the fence:\n%s", body)
	}
	if !strings.Contains(body, "- `migrate`\n") || !strings.Contains(body, "- ``cache`warm``\n") {
		t.Errorf("jobs not listed as code spans:\n%s", body)
	}
	if !strings.Contains(body, "2026-11-30T01:02:03Z") {
		t.Errorf("no time:\n%s", body)
	}
}

func TestRenderComment_Errors(t *testing.T) {
	errs := []string{"config/deploy.yml:14: servers.web.hosts[1]: not a host", "config/deploy.yml:20: `image` <b>missing</b>\n second line"}
	body := RenderComment(Comment{App: "web", SHA: "abc", Plan: "ignored plan", Errors: errs, Time: when, Key: "web"})
	if strings.Contains(body, "ignored plan") || strings.Contains(body, "```text") {
		t.Errorf("a plan is shown with errors:\n%s", body)
	}
	if !strings.Contains(body, "(2 errors)") || !strings.Contains(body, "- `config/deploy.yml:14: servers.web.hosts[1]: not a host`\n") {
		t.Errorf("errors not listed:\n%s", body)
	}
	// HTML and backticks stay inside a code span; the item stays on one line.
	if !strings.Contains(body, "- ``config/deploy.yml:20: `image` <b>missing</b> second line``\n") {
		t.Errorf("second error not safely quoted:\n%s", body)
	}
}

func TestRenderComment_Truncates(t *testing.T) {
	line := strings.Repeat("x", 99) + "\n"
	plan := strings.Repeat(line, 2000) // 200 kB
	body := RenderComment(Comment{App: "web", SHA: "abc", Plan: plan, Jobs: []string{"a"}, Time: when, Key: "web"})
	if len(body) > MaxComment {
		t.Fatalf("body of %d bytes, over %d", len(body), MaxComment)
	}
	m := regexp.MustCompile(`(\d+) more lines of the plan not shown`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no truncation note in the last lines:\n%s", body[len(body)-300:])
	}
	shown := strings.Count(body, strings.TrimSuffix(line, "\n"))
	if shown < 500 || m[1] != strconv.Itoa(2000-shown) {
		t.Errorf("%d lines shown, note says %s more", shown, m[1])
	}
	if !strings.Contains(body, "\n```\n") || !strings.Contains(body, "- `a`") || !strings.HasSuffix(body, "by capstan._\n") {
		t.Errorf("the fence, jobs or footer lost in truncation:\n%s", body[len(body)-300:])
	}

	many := make([]string, 5000)
	for i := range many {
		many[i] = "config/deploy.yml:1: " + strings.Repeat("e", 60)
	}
	body = RenderComment(Comment{App: "web", SHA: "abc", Errors: many, Jobs: many, Time: when, Key: "web"})
	if len(body) > MaxComment || !strings.Contains(body, "more items not shown") {
		t.Errorf("errors: %d bytes, note present %v", len(body), strings.Contains(body, "more items not shown"))
	}
	// One endless line (no newline) is cut too.
	body = RenderComment(Comment{App: "web", SHA: "abc", Plan: strings.Repeat("é", 100000), Time: when})
	if len(body) > MaxComment || !strings.Contains(body, "1 more lines of the plan") {
		t.Errorf("one long line: %d bytes", len(body))
	}
}

func TestMarker_CannotCloseTheComment(t *testing.T) {
	for _, key := range []string{"web", "a-b", "x -->y", "a--b", "evil\n<script>"} {
		m := Marker(key)
		inner := strings.TrimSuffix(strings.TrimPrefix(m, "<!-- "), " -->")
		if strings.Contains(inner, "--") || strings.ContainsAny(inner, "<>\n ") {
			t.Errorf("Marker(%q) = %q", key, m)
		}
	}
	if Marker("web") == Marker("worker") || Marker("web") != "<!-- capstan:plan:web -->" {
		t.Errorf("markers: %q %q", Marker("web"), Marker("worker"))
	}
}
