package kamal

import (
	"fmt"
	"strings"
	"sync"
)

// maxParallelCommands bounds the $(command) substitutions that run at the
// same time.
const maxParallelCommands = 8

// dotenvEntry is one KEY=value assignment of a secrets file and, once
// done, its value.
type dotenvEntry struct {
	dotenvLine
	value   string
	problem error // why the value is unusable; never contains a value
	kind    error // sentinel for problem
	done    bool
}

// setProblem records the first problem of an evaluation step.
func (e *dotenvEntry) setProblem(kind error, format string, args ...any) {
	if e.problem == nil {
		e.problem, e.kind = fmt.Errorf(format, args...), kind
	}
}

// dotenvFile is a parsed secrets (or env) file being evaluated.
type dotenvFile struct {
	name    string
	list    []*dotenvEntry          // assignments in file order
	byKey   map[string][]int        // assignment indexes of each key, ascending
	entries map[string]*dotenvEntry // the last assignment of each key

	// env resolves $NAME outside the file (Ruby's ENV); unset explains a
	// name it does not know, refused a command when run is nil.
	env     func(string) (string, bool)
	unset   string
	refused string
	run     func(string) (string, error)
	results map[cmdKey]cmdResult
}

type cmdKey struct{ entry, n int }

type cmdResult struct {
	out string
	err error
}

// cmdJob is a command an entry waits for.
type cmdJob struct {
	f      *dotenvFile
	key    cmdKey
	script string
}

// newDotenvFile scans text. An "export KEY" line without a value naming no
// earlier key is the gem's FormatError, reported on errs.
func newDotenvFile(name, text string, errs *collector) *dotenvFile {
	f := &dotenvFile{name: name, byKey: map[string][]int{}, entries: map[string]*dotenvEntry{}, results: map[cmdKey]cmdResult{}}
	lines, ok := scanDotenv(text)
	if !ok {
		errs.add(ErrSyntax, name, 0, "", "is not valid UTF-8 (Kamal's dotenv parser fails on it)")
		return f
	}
	for _, l := range lines {
		if l.export && !l.hasValue {
			if len(f.byKey[l.key]) == 0 {
				errs.add(ErrSyntax, name, l.line, l.key, "export %s without a value names no earlier key of the file: dotenv refuses the file (\"has an unset variable\")", l.key)
			}
			continue
		}
		e := &dotenvEntry{dotenvLine: l}
		f.byKey[l.key] = append(f.byKey[l.key], len(f.list))
		f.list = append(f.list, e)
		f.entries[l.key] = e
	}
	return f
}

// earlier returns the last assignment of name before entry i, as the
// gem's hash holds it while it parses entry i.
func (f *dotenvFile) earlier(i int, name string) *dotenvEntry {
	idx := f.byKey[name]
	for k := len(idx) - 1; k >= 0; k-- {
		if idx[k] < i {
			return f.list[idx[k]]
		}
	}
	return nil
}

// step evaluates entry i as Parser#parse_value does, as far as it can: it
// reports done, or the commands the entry waits for (none when it waits
// for an earlier entry).
func (f *dotenvFile) step(i int) (jobs []cmdJob, done bool) {
	e := f.list[i]
	e.problem, e.kind = nil, nil
	v, quote := unquoteDotenv(e.raw)
	if quote == '\'' {
		e.value, e.done = v, true
		return nil, true
	}
	if quote == '"' {
		mode, ok := "", true
		if prev := f.earlier(i, "DOTENV_LINEBREAK_MODE"); prev != nil {
			mode, ok = prev.value, prev.done
		} else if f.env != nil {
			mode, _ = f.env("DOTENV_LINEBREAK_MODE")
		}
		if !ok {
			return nil, false
		}
		v = expandNewlines(v, mode == "legacy")
	}
	v = unescapeDotenv(v)

	// Kamal's InlineCommandSubstitution, then dotenv's Variable.
	var out strings.Builder
	var outputs [][2]int // where command output landed in out
	waiting, last := false, 0
	for n, m := range scanCommands(v) {
		out.WriteString(v[last:m.start])
		last = m.end
		if m.escaped {
			out.WriteString(v[m.start+1 : m.end])
			continue
		}
		body := m.body(v)
		if f.run == nil {
			e.setProblem(ErrUnsafe, "command substitution $(%s) is refused: %s", abbreviate(body), f.refused)
			continue
		}
		script, ok, bad := f.expandVars(i, body, nil, e)
		switch {
		case !ok:
			waiting = true
			continue
		case bad:
			continue // a variable of the command is unusable: do not run it
		}
		key := cmdKey{i, n}
		r, ran := f.results[key]
		if !ran {
			jobs = append(jobs, cmdJob{f: f, key: key, script: script})
			waiting = true
			continue
		}
		if r.err != nil {
			e.setProblem(ErrSecret, "command substitution $(%s) failed: %s", abbreviate(body), strings.ReplaceAll(r.err.Error(), script, "…"))
			continue
		}
		from := out.Len()
		out.WriteString(chomp(r.out))
		outputs = append(outputs, [2]int{from, out.Len()})
	}
	if waiting {
		return jobs, false
	}
	out.WriteString(v[last:])
	value, ok, _ := f.expandVars(i, out.String(), outputs, e)
	if !ok {
		return nil, false
	}
	e.value, e.done = value, true
	return nil, true
}

// expandVars is Substitutions::Variable.call on v for entry i: $NAME is
// the last earlier assignment of NAME, else f.env. ok is false while such
// an assignment is not done. bad reports a name that is unset or whose
// assignment has a problem (recorded on e). A name that comes from command
// output (outputs) is part of a secret and is never named in a problem.
func (f *dotenvFile) expandVars(i int, v string, outputs [][2]int, e *dotenvEntry) (s string, ok, bad bool) {
	matches := scanVariables(v)
	if len(matches) == 0 {
		return v, true, false
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		b.WriteString(v[last:m.start])
		last = m.end
		switch {
		case m.escaped:
			b.WriteString(v[m.start+1 : m.end])
			continue
		case m.name == "":
			b.WriteString(v[m.start:m.end])
			continue
		}
		if prev := f.earlier(i, m.name); prev != nil {
			if !prev.done {
				return "", false, false
			}
			if prev.problem != nil {
				e.setProblem(prev.kind, "%s", prev.problem.Error())
				bad = true
			}
			b.WriteString(prev.value)
			continue
		}
		val, set := "", false
		if f.env != nil {
			val, set = f.env(m.name)
		}
		if !set {
			bad = true
			if overlaps(m, outputs) {
				e.setProblem(ErrSecret, "the output of a command substitution contains a $ followed by a name, which dotenv substitutes as a variable that is not set (Kamal would replace it with \"\")")
			} else {
				e.setProblem(ErrSecret, "$%s is not set %s", m.name, f.unset)
			}
		}
		b.WriteString(val)
	}
	b.WriteString(v[last:])
	return b.String(), true, bad
}

func overlaps(m dotenvMatch, ranges [][2]int) bool {
	for _, r := range ranges {
		if m.start < r[1] && r[0] < m.end {
			return true
		}
	}
	return false
}

// evalDotenv evaluates files in waves: each wave steps every entry not yet
// done, in file order, then runs the commands the entries wait for at the
// same time (at most maxParallelCommands at once, each with its file's
// run, which must be safe for concurrent use). An entry only waits for
// earlier ones, so every wave runs at least one command or finishes an
// entry; results do not depend on timing.
func evalDotenv(files []*dotenvFile) {
	for {
		var jobs []cmdJob
		pending := false
		for _, f := range files {
			for i, e := range f.list {
				if e.done {
					continue
				}
				js, done := f.step(i)
				pending = pending || !done
				jobs = append(jobs, js...)
			}
		}
		if !pending {
			return
		}
		if len(jobs) == 0 { // cannot happen (see above); never loop forever
			for _, f := range files {
				for _, e := range f.list {
					if !e.done {
						e.setProblem(ErrSecret, "could not be evaluated")
						e.done = true
					}
				}
			}
			return
		}
		runJobs(jobs)
	}
}

// runJobs runs every job with its file's run, at most maxParallelCommands
// at a time, and stores the results.
func runJobs(jobs []cmdJob) {
	results := make([]cmdResult, len(jobs))
	sem := make(chan struct{}, maxParallelCommands)
	var wg sync.WaitGroup
	for n := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := jobs[n].f.run(jobs[n].script)
			results[n] = cmdResult{out, err}
		}()
	}
	wg.Wait()
	for n, j := range jobs {
		j.f.results[j.key] = results[n]
	}
}
