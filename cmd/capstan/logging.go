package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
)

// newLogger builds the process logger: tint (colored text) when format is
// "text", or "auto" and w is a terminal; JSON otherwise.
func newLogger(w io.Writer, format, level string) (*slog.Logger, slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	switch strings.ToLower(format) {
	case "auto":
		if tty {
			return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: "15:04:05.000"})), lvl, nil
		}
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), lvl, nil
	case "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: "15:04:05.000", NoColor: !tty})), lvl, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), lvl, nil
	default:
		return nil, 0, fmt.Errorf("--log-format %q: want auto, text or json", format)
	}
}
