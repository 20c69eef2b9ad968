package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

func TestHandler_RedactsMessageAndAttrs(t *testing.T) {
	const secret = "tok-9f8e7d"
	var buf bytes.Buffer
	r := New(secret)
	log := r.Logger(slog.New(slog.NewJSONHandler(&buf, nil)))
	log = log.With("pre", "x"+secret)
	log.WithGroup("g").Info("login with "+secret,
		"str", secret,
		"err", errors.New("bad token "+secret),
		"stringer", stringer{secret},
		"bytes", []byte(secret),
		slog.Group("nested", "argv", []string{"docker", "login", "-p", secret}),
		"n", 42,
	)
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("secret leaked into log: %s", out)
	}
	if got := strings.Count(out, Mask); got != 7 {
		t.Errorf("want 7 masks (msg, pre, str, err, stringer, bytes, nested.argv), got %d: %s", got, out)
	}
	if !strings.Contains(out, `"n":42`) {
		t.Errorf("non-secret attribute lost: %s", out)
	}
}
