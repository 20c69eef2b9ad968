package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// follower follows one role's log on one host across container changes.
// Its functions are the App's in production and fakes in tests.
type follower struct {
	// stream runs a remote command, copying its output to w as it comes.
	stream func(ctx context.Context, host string, argv []string, w io.Writer) error
	// lookup returns role's current container on host (nil: none runs).
	lookup func(ctx context.Context, host, role string) (*Container, error)
	out    *logOut
	warn   func(host string, err error)
	// pause is the wait before each lookup after a stream ended, and
	// between lookups that found no container.
	pause time.Duration
	now   func() time.Time
}

// follow streams t's log (first bounds the first read) until ctx ends.
// When the stream ends (the container stopped, or the connection broke)
// it looks the role's current container up again: the same container
// (restarted, or reached again) is followed on from its last line, a new
// one (a redeploy) from when the last stream started, with a line saying
// so; while none runs it waits for one.
func (f *follower) follow(ctx context.Context, t LogTarget, first logArgs) {
	args := first
	args.follow = true
	var after time.Time // lines of t up to this time were written already
	var lastWarn string
	warn := func(err error) {
		if s := err.Error(); s != lastWarn {
			lastWarn = s
			f.warn(t.Host, err)
		}
	}
	started := f.now()
	for {
		if t.ID != "" { // "": nothing ran when the follow started
			started = f.now()
			lw := &lineWriter{out: f.out, t: t, after: after}
			err := f.stream(ctx, t.Host, logsArgv(t.ID, args), lw)
			lw.flush()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				warn(fmt.Errorf("logs of %s: %w", t.Name, err))
			}
			if lw.last.After(after) {
				after = lw.last
			}
		}
		next := f.next(ctx, t, warn)
		if next == nil {
			return // ctx ended
		}
		if t.ID == "" {
			f.note(t, "capstan: now following "+next.Name)
			t.ID, t.Name = next.ID, next.Name
			args = logArgs{follow: true, since: unixArg(started)}
			continue
		}
		if next.ID == t.ID {
			// The same container: on from its last written line.
			args = logArgs{follow: true}
			if !after.IsZero() {
				args.since = unixArg(after)
			}
			continue
		}
		f.note(t, fmt.Sprintf("capstan: now following %s (%s stopped)", next.Name, t.Name))
		t.ID, t.Name = next.ID, next.Name
		after = time.Time{}
		args = logArgs{follow: true, since: unixArg(started)}
	}
}

// next waits f.pause, then looks t's role up until a container runs; nil
// when ctx ends first.
func (f *follower) next(ctx context.Context, t LogTarget, warn func(error)) *Container {
	waiting := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.pause):
		}
		cur, err := f.lookup(ctx, t.Host, t.Role)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			warn(err)
		case cur == nil:
			if !waiting {
				f.note(t, "capstan: no "+t.Role+" container runs; waiting for one")
				waiting = true
			}
		default:
			return cur
		}
	}
}

// note writes a line of capstan's own in t's stream.
func (f *follower) note(t LogTarget, text string) {
	_ = f.out.line(logLine{t: t, text: text, note: true})
}

// lineWriter cuts a stream into lines for out, dropping the lines
// stamped at or before after (written already by an earlier stream of the
// same container). last is the timestamp of the last line passed on.
type lineWriter struct {
	mu      sync.Mutex
	out     *logOut
	t       LogTarget
	after   time.Time
	last    time.Time
	partial []byte
}

// maxLine bounds a line held back waiting for its end; a longer one is
// passed on in pieces.
const maxLine = 1 << 20

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			if len(w.partial) > maxLine {
				w.emit(string(w.partial))
				w.partial = w.partial[:0]
			}
			return len(p), nil
		}
		w.emit(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
}

// flush passes on an unterminated last line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit(string(w.partial))
		w.partial = nil
	}
}

func (w *lineWriter) emit(s string) {
	l := parseLogLine(w.t, s, w.last)
	if !l.ts.IsZero() && !w.after.IsZero() && !l.ts.After(w.after) {
		return
	}
	w.last = l.ts
	_ = w.out.line(l)
}
