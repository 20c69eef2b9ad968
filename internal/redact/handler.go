package redact

import (
	"context"
	"fmt"
	"log/slog"
)

// Handler is a slog.Handler that masks secrets in the message and in every
// attribute value (strings, errors, fmt.Stringers and any other value, which
// is formatted with %+v first) before passing the record on. Groups are
// walked recursively and LogValuers resolved. Keys are not redacted.
type Handler struct {
	r    *Redactor
	next slog.Handler
}

// NewHandler wraps next. With a nil or empty Redactor the records pass
// through unchanged.
func NewHandler(r *Redactor, next slog.Handler) *Handler {
	return &Handler{r: r, next: next}
}

// Logger returns a logger whose records are redacted by r before reaching
// l's handler. A nil l yields a logger that discards everything.
func (r *Redactor) Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	if r.Len() == 0 {
		return l
	}
	return slog.New(NewHandler(r, l.Handler()))
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, rec slog.Record) error {
	if h.r.Len() == 0 {
		return h.next.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.r.Attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.r.Attr(a)
	}
	return &Handler{r: h.r, next: h.next.WithAttrs(red)}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{r: h.r, next: h.next.WithGroup(name)}
}

// Attr returns a with its value redacted (recursively for groups). It can
// also serve as a slog.HandlerOptions.ReplaceAttr function body.
func (r *Redactor) Attr(a slog.Attr) slog.Attr {
	if r.Len() == 0 {
		return a
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]slog.Attr, len(g))
		for i, ga := range g {
			red[i] = r.Attr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(red...)}
	case slog.KindAny:
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		case []byte:
			s = string(x)
		default:
			s = fmt.Sprintf("%+v", x)
		}
		if r.Contains(s) {
			return slog.String(a.Key, r.String(s))
		}
		return slog.Attr{Key: a.Key, Value: v}
	default: // numbers, bools, times, durations: formatted values can still be secrets
		s := v.String()
		if r.Contains(s) {
			return slog.String(a.Key, r.String(s))
		}
		return slog.Attr{Key: a.Key, Value: v}
	}
}
