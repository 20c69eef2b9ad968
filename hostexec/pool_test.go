package hostexec

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestPool_Run(t *testing.T) {
	s := startSSHD(t)
	p := newPool(t, s.Config())
	ctx := testCtx(t, 20*time.Second)

	res, err := p.Run(ctx, s.Host(), []string{"sh", "-c", "echo out; echo err >&2"}, RunOptions{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Errorf("stdout %q stderr %q", res.Stdout, res.Stderr)
	}

	res, err = p.Run(ctx, s.Host(), []string{"sh", "-c", "echo partial; echo boom >&2; exit 3"}, RunOptions{})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want *ExitError, got %v", err)
	}
	if ee.Code != 3 || string(ee.Stderr) != "boom\n" || ee.Host != "root@127.0.0.1:"+itoa(s.Port) {
		t.Errorf("ExitError = %+v", ee)
	}
	if string(res.Stdout) != "partial\n" {
		t.Errorf("stdout of failed command = %q", res.Stdout)
	}

	res, err = p.Run(ctx, s.Host(), []string{"cat"}, RunOptions{Stdin: bytes.NewReader([]byte("in put"))})
	if err != nil || string(res.Stdout) != "in put" {
		t.Errorf("stdin round trip: %q, %v", res.Stdout, err)
	}
	_ = context.Background
}
