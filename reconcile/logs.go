package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// ErrUnknownTarget: a role or host named in LogOptions is not in the
// configuration.
var ErrUnknownTarget = errors.New("not in the configuration")

// Streamer runs argv on a host and copies its stdout to w as it arrives,
// until the command exits (nil for exit 0) or ctx ends. Logs follows
// containers with it; cmd/capstan's SSH adapter implements it.
type Streamer interface {
	Stream(ctx context.Context, host string, argv []string, w io.Writer) error
}

// LogOptions selects the containers and the lines App.Logs reads.
type LogOptions struct {
	// Roles and Hosts select the containers; empty selects all.
	Roles, Hosts []string
	// Lines is how many of the last lines of each container to read; 0
	// reads all of them.
	Lines int
	// Since reads only the lines of the last Since (0: no bound).
	Since time.Duration
	// Follow streams new lines until ctx ends, following each role's
	// next container when the followed one stops (a redeploy).
	Follow bool
	// Timestamps keeps Docker's timestamp before each line's text.
	Timestamps bool
	// Grep, when set, keeps only the lines whose masked text matches.
	Grep *regexp.Regexp
	// Warn learns, for each host or container that cannot be read, why;
	// the others go on. nil discards.
	Warn func(host string, err error)
}

// LogTarget is the container of a role on a host whose log is read.
type LogTarget struct {
	Host, Role string
	ID, Name   string
}

// logSpecs returns the app containers of the selected roles on the
// selected hosts, by host, in configuration order.
func (a *App) logSpecs(roles, hosts []string) (map[string][]*kamal.Container, []string, error) {
	for _, r := range roles {
		if a.Config.Role(r) == nil {
			return nil, nil, fmt.Errorf("role %q: %w", r, ErrUnknownTarget)
		}
	}
	for _, h := range hosts {
		if !slices.ContainsFunc(a.Hosts, func(hp *kamal.HostPlan) bool { return hp.Host == h }) {
			return nil, nil, fmt.Errorf("host %q: %w", h, ErrUnknownTarget)
		}
	}
	specs := map[string][]*kamal.Container{}
	var order []string
	for _, hp := range a.Hosts {
		if len(hosts) > 0 && !slices.Contains(hosts, hp.Host) {
			continue
		}
		for _, c := range hp.Apps {
			if len(roles) == 0 || slices.Contains(roles, c.Role) {
				if specs[hp.Host] == nil {
					order = append(order, hp.Host)
				}
				specs[hp.Host] = append(specs[hp.Host], c)
			}
		}
	}
	return specs, order, nil
}

// LogTargets observes the selected hosts (in parallel, each within the
// observe timeout) and returns the current container of each selected
// role on each (see roleContainers). A host that cannot be observed, and
// a role that runs no container, are reported to warn (nil: discarded).
func (a *App) LogTargets(ctx context.Context, roles, hosts []string, warn func(string, error)) ([]LogTarget, error) {
	all, err := a.logTargets(ctx, roles, hosts, warn)
	return slices.DeleteFunc(all, func(t LogTarget) bool { return t.ID == "" }), err
}

// logTargets is LogTargets with the roles that run no container, or whose
// host could not be observed, kept with an empty ID.
func (a *App) logTargets(ctx context.Context, roles, hosts []string, warn func(string, error)) ([]LogTarget, error) {
	specs, order, err := a.logSpecs(roles, hosts)
	if err != nil {
		return nil, err
	}
	warn = orDiscard(warn)
	found := make([][]LogTarget, len(order))
	a.forEachHost(ctx, order, func(ctx context.Context, i int, host string) {
		octx, cancel := context.WithTimeout(ctx, a.observeTimeout())
		defer cancel()
		o, err := a.observe(octx, host)
		if err != nil {
			warn(host, err)
		}
		for _, spec := range specs[host] {
			t := LogTarget{Host: host, Role: spec.Role}
			if o != nil {
				if cur, _ := a.roleContainers(spec, o); cur != nil {
					t.ID, t.Name = cur.ID, cur.Name
				} else {
					warn(host, fmt.Errorf("no %s container runs", spec.Role))
				}
			}
			found[i] = append(found[i], t)
		}
	})
	return slices.Concat(found...), ctx.Err()
}

// currentOn observes host and returns role's current container there (nil
// when none runs).
func (a *App) currentOn(ctx context.Context, host, role string) (*Container, error) {
	specs, _, err := a.logSpecs([]string{role}, []string{host})
	if err != nil || len(specs[host]) == 0 {
		return nil, fmt.Errorf("role %s on %s: %w", role, host, ErrUnknownTarget)
	}
	ctx, cancel := context.WithTimeout(ctx, a.observeTimeout())
	defer cancel()
	o, err := a.observe(ctx, host)
	if err != nil {
		return nil, err
	}
	cur, _ := a.roleContainers(specs[host][0], o)
	return cur, nil
}

// Logs writes the logs of the current container of each selected role on
// each selected host to w, one line at a time as "HOST ROLE | text", the
// secrets of the configuration masked (Redact, and each line of a
// multi-line secret), filtered by o.Grep. Without o.Follow the lines of
// every container are merged by Docker's timestamps and written once all
// are read; with it, lines are written as they arrive until ctx ends, and
// a role that runs no container, or whose host cannot be reached, is
// waited for. Hosts and containers that cannot be read are reported to
// o.Warn. The error is ErrUnknownTarget for a role or host not in the
// configuration, or ctx's.
func (a *App) Logs(ctx context.Context, o LogOptions, w io.Writer) error {
	o.Warn = orDiscard(o.Warn)
	targets, err := a.logTargets(ctx, o.Roles, o.Hosts, o.Warn)
	if err != nil {
		return err
	}
	out := &logOut{w: w, mask: a.logMask(), grep: o.Grep, timestamps: o.Timestamps}
	first := logArgs{tail: o.Lines, since: sinceArg(o.Since)}
	if !o.Follow {
		return a.readLogs(ctx, slices.DeleteFunc(targets, func(t LogTarget) bool { return t.ID == "" }), first, out, o.Warn)
	}
	st, ok := a.SSH.(Streamer)
	if !ok {
		return errors.New("reconcile: following logs needs an SSH adapter that streams")
	}
	f := &follower{stream: st.Stream, lookup: a.currentOn, out: out, warn: o.Warn, pause: time.Second, now: a.now}
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.follow(ctx, t, first)
		}()
	}
	wg.Wait()
	return nil
}

// readLogs reads each target's lines (at most a.parallel() at a time),
// then writes them merged by timestamp.
func (a *App) readLogs(ctx context.Context, targets []LogTarget, args logArgs, out *logOut, warn func(string, error)) error {
	hosts := make([]string, len(targets))
	for i, t := range targets {
		hosts[i] = t.Host
	}
	read := make([][]logLine, len(targets))
	a.forEachHost(ctx, hosts, func(ctx context.Context, i int, host string) {
		t := targets[i]
		b, err := a.SSH.Run(ctx, host, logsArgv(t.ID, args), nil)
		if err != nil {
			warn(host, fmt.Errorf("logs of %s: %w", t.Name, err))
		}
		read[i] = parseLogLines(t, b)
	})
	all := slices.Concat(read...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].ts.Before(all[j].ts) })
	for _, l := range all {
		if err := out.line(l); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// logArgs are the bounds of one `docker logs`.
type logArgs struct {
	tail   int    // last lines; 0: all
	since  string // Docker's --since value; "": none
	follow bool
}

// sinceArg is Docker's --since for the last d ("" for 0): a Go duration,
// which Docker reads relative to the host's clock.
func sinceArg(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

// unixArg is t as Docker's "seconds.nanoseconds" timestamp.
func unixArg(t time.Time) string {
	return strconv.FormatInt(t.Unix(), 10) + "." + fmt.Sprintf("%09d", t.Nanosecond())
}

// logsArgv is the remote command that prints a container's log with
// Docker's timestamps, its stderr merged into stdout (where the container
// wrote it is not kept).
func logsArgv(id string, a logArgs) []string {
	argv := []string{"sh", "-c", `exec docker logs "$@" 2>&1`, "sh", "--timestamps", "--tail"}
	if a.tail > 0 {
		argv = append(argv, strconv.Itoa(a.tail))
	} else {
		argv = append(argv, "all")
	}
	if a.since != "" {
		argv = append(argv, "--since", a.since)
	}
	if a.follow {
		argv = append(argv, "--follow")
	}
	return append(argv, id)
}

// logLine is one line of a container's log.
type logLine struct {
	t    LogTarget
	ts   time.Time // Docker's timestamp; a line without one has its predecessor's
	text string
	note bool // a line of capstan's own (no timestamp, never filtered)
}

// parseLogLines splits b, `docker logs --timestamps` output, into lines.
func parseLogLines(t LogTarget, b []byte) []logLine {
	var out []logLine
	var prev time.Time
	for _, s := range strings.SplitAfter(string(b), "\n") {
		if s == "" {
			continue
		}
		l := parseLogLine(t, strings.TrimSuffix(s, "\n"), prev)
		prev = l.ts
		out = append(out, l)
	}
	return out
}

// parseLogLine reads "TIMESTAMP text"; a line without a timestamp (a
// message of the docker CLI) gets prev.
func parseLogLine(t LogTarget, s string, prev time.Time) logLine {
	s = strings.TrimSuffix(s, "\r")
	if stamp, text, ok := strings.Cut(s, " "); ok {
		if ts, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
			return logLine{t: t, ts: ts, text: text}
		}
	}
	return logLine{t: t, ts: prev, text: s}
}

// logOut writes lines to w, whole lines at a time (several streams share
// it), masked, filtered and prefixed.
type logOut struct {
	mu         sync.Mutex
	w          io.Writer
	mask       func(string) string
	grep       *regexp.Regexp
	timestamps bool
}

// format returns l as written, and false when the filter drops it.
func (o *logOut) format(l logLine) (string, bool) {
	text := o.mask(l.text)
	if !l.note && o.grep != nil && !o.grep.MatchString(text) {
		return "", false
	}
	if o.timestamps && !l.note && !l.ts.IsZero() {
		text = l.ts.UTC().Format(time.RFC3339Nano) + " " + text
	}
	return l.t.Host + " " + l.t.Role + " | " + text + "\n", true
}

func (o *logOut) line(l logLine) error {
	s, ok := o.format(l)
	if !ok {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err := io.WriteString(o.w, s)
	return err
}

// logMask masks the configuration's secrets in one line of a log: with
// Redact, and each line of a multi-line secret (a key, a certificate)
// with a redactor of those lines, since a log line holds at most one.
func (a *App) logMask() func(string) string {
	var parts []string
	for _, s := range a.Config.SecretValues() {
		if strings.Contains(s, "\n") {
			for _, p := range strings.Split(s, "\n") {
				if p = strings.TrimSpace(p); p != "" {
					parts = append(parts, p)
				}
			}
		}
	}
	red := redact.New(parts...)
	return func(s string) string {
		if a.Redact != nil {
			s = a.Redact(s)
		}
		return red.String(s)
	}
}

func orDiscard(warn func(string, error)) func(string, error) {
	if warn == nil {
		return func(string, error) {}
	}
	return warn
}

// SplitList splits a comma-separated selection (roles, hosts), as a flag
// or a query gives it, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
