package forge

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxComment is the longest comment body RenderComment makes, in bytes
// (GitHub refuses more than 65536 characters; a byte is never less).
const MaxComment = 65000

// Comment is what a plan comment shows.
type Comment struct {
	App string
	SHA string // the planned head
	// Plan is the plan as capstan plan prints it (already free of
	// secrets); ignored when Errors is not empty.
	Plan string
	// Errors are the config's errors, one "FILE:LINE: …" each.
	Errors []string
	// Jobs are the jobs the plan would run.
	Jobs []string
	Time time.Time
	// Key names the comment, for Marker: the app, so that each app
	// following the repository keeps its own comment.
	Key string
}

// Marker is the hidden line that names the comment of key, for
// UpsertComment to find it again. Characters of key other than letters,
// digits and ._/:- become "_", so a key never ends the HTML comment.
func Marker(key string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', strings.ContainsRune("._/:", r):
			return r
		case r == '-':
			return r
		}
		return '_'
	}, key)
	return "<!-- capstan:plan:" + strings.ReplaceAll(clean, "--", "-_") + " -->"
}

// RenderComment builds the Markdown body of a plan comment: the marker,
// a heading naming the app and short SHA, then the config errors as a
// list or the plan in a text block, the jobs that would run, and the
// time. Text from the plan and errors cannot break out of its block or
// code span. The body is at most MaxComment bytes: the plan, then the
// lists, are cut at a line with a note saying how much is not shown.
func RenderComment(c Comment) string {
	head := fmt.Sprintf("%s\n### capstan plan for %s at %s\n\n", Marker(c.Key), inline(c.App), inline(shortSHA(c.SHA)))
	foot := "\n_Planned " + c.Time.UTC().Format(time.RFC3339) + " by capstan._\n"
	budget := MaxComment - len(head) - len(foot)
	jobs := list("Jobs that would run", c.Jobs, budget/4)
	if len(c.Errors) > 0 {
		errs := list(fmt.Sprintf("**The config is invalid** (%d errors); nothing would change", len(c.Errors)), c.Errors, budget-len(jobs))
		return head + errs + jobs + foot
	}
	return head + block(c.Plan, budget-len(jobs)) + jobs + foot
}

func shortSHA(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// block puts text in a ```text block fenced by more backticks than any
// run within it, cut to fit limit bytes in all.
func block(text string, limit int) string {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		text = "(no changes)"
	}
	fence := strings.Repeat("`", max(3, longestRun(text, '`')+1))
	wrap := len(fence)*2 + len("text\n\n\n")
	shown, cut := cutLines(text, limit-wrap-noteLen)
	out := fence + "text\n" + shown + "\n" + fence + "\n"
	if cut > 0 {
		out += omitted(fmt.Sprintf("%d more lines of the plan", cut))
	}
	return out
}

// list renders a titled Markdown list of items in code spans, cut to fit
// limit bytes; "" for no items.
func list(title string, items []string, limit int) string {
	if len(items) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(title + ":\n\n")
	for i, it := range items {
		line := "- " + inline(it) + "\n"
		if b.Len()+len(line)+noteLen+1 > limit {
			b.WriteString(omitted(fmt.Sprintf("%d more items", len(items)-i)))
			break
		}
		b.WriteString(line)
	}
	b.WriteString("\n")
	return b.String()
}

// noteLen bounds the length of an omitted note.
const noteLen = 80

func omitted(what string) string {
	return "\n_… " + what + " not shown (the comment length limit)._\n"
}

// inline puts s on one line in a code span that its own backticks
// cannot close.
func inline(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "``"
	}
	fence := strings.Repeat("`", longestRun(s, '`')+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return fence + s + fence
}

func longestRun(s string, c byte) int {
	best, run := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
	}
	return best
}

// cutLines returns the whole lines of s that fit in max bytes and how
// many lines were left out. A first line longer than max is cut at a
// character boundary.
func cutLines(s string, limit int) (string, int) {
	if len(s) <= limit {
		return s, 0
	}
	limit = max(limit, 0)
	if end := strings.LastIndexByte(s[:limit], '\n'); end >= 0 {
		return s[:end], strings.Count(s[end:], "\n") // s[end:] starts each line left out with "\n"
	}
	end := limit
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end], strings.Count(s[end:], "\n") + 1 // the first line's rest, and the lines after
}
