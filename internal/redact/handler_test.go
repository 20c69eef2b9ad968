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

// A short secret is masked as a whole attribute value or a delimited token
// in the message, and left alone inside words.
func TestHandler_ShortSecret(t *testing.T) {
	var buf bytes.Buffer
	log := New("x").Logger(slog.New(slog.NewTextHandler(&buf, nil)))
	log.Info("login -p x", "password", "x", "host", "x.example", "role", "proxy", "err", errors.New("PASSWORD=x rejected"))
	out := buf.String()
	for _, want := range []string{`msg="login -p ` + Mask + `"`, "password=" + Mask, "host=x.example", "role=proxy", `err="PASSWORD=` + Mask + ` rejected"`} {
		if !strings.Contains(out, want) {
			t.Errorf("want %s in %s", want, out)
		}
	}
}
