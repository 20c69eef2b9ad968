package reconcile

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// frame is one frame of Docker's multiplexed stream.
func frame(stream byte, s string) []byte {
	hdr := make([]byte, 8, 8+len(s))
	hdr[0] = stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(s)))
	return append(hdr, s...)
}

// execEngine answers exec calls as dockerd does: create, start (the
// connection is taken over and the multiplexed output written raw, then
// closed), inspect. Container "kamal-proxy" runs "list" (exit 0) and
// "deploy" (exit 1); any other container does not exist.
func execEngine(t *testing.T) *dockerAPI {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	cmds := map[string][]string{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/containers/kamal-proxy/exec":
			var in struct{ Cmd []string }
			b, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(b, &in); err != nil || r.Header.Get("Content-Type") != "application/json" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			mu.Lock()
			cmds["e1"] = in.Cmd
			mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"Id":"e1"}`))
		case strings.HasSuffix(r.URL.Path, "/exec"):
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such container"}`))
		case r.URL.Path == "/exec/e1/start":
			mu.Lock()
			cmd := cmds["e1"]
			mu.Unlock()
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n")
			if slices.Contains(cmd, "list") {
				buf.Write(frame(1, "Service  Host  "))
				buf.Write(frame(2, "a warning\n"))
				buf.Write(frame(1, "Target\nshop-web * a:3000\n"))
			} else {
				buf.Write(frame(2, "Error: target failed to become healthy (token s3cret)\n"))
			}
			buf.Flush()
		case r.URL.Path == "/exec/e1/json":
			mu.Lock()
			cmd := cmds["e1"]
			mu.Unlock()
			code := 1
			if slices.Contains(cmd, "list") {
				code = 0
			}
			w.Write([]byte(fmt.Sprintf(`{"Running":false,"ExitCode":%d}`, code)))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	api := &dockerAPI{dial: &unixDialer{path: sock}}
	api.learn("h1", "/root", "", "")
	return api
}

// cliRunner records what falls through to the docker CLI.
type cliRunner struct{ argv [][]string }

func (c *cliRunner) Run(_ context.Context, host string, argv []string, _ io.Reader) ([]byte, error) {
	c.argv = append(c.argv, argv)
	return []byte("cli"), nil
}

func TestExecRunner_ThroughTheAPI(t *testing.T) {
	api := execEngine(t)
	a := &App{Redact: func(s string) string { return strings.ReplaceAll(s, "s3cret", "[REDACTED]") }}
	a.apiOnce.Do(func() { a.api = api })
	cli := &cliRunner{}
	r := a.ExecRunner(cli)
	ctx := context.Background()

	out, err := r.Run(ctx, "h1", []string{"docker", "exec", "kamal-proxy", "kamal-proxy", "list"}, nil)
	if err != nil || string(out) != "Service  Host  Target\nshop-web * a:3000\n" {
		t.Fatalf("list: %q, %v (want stdout only, frames joined)", out, err)
	}
	_, err = r.Run(ctx, "h1", []string{"docker", "exec", "kamal-proxy", "kamal-proxy", "deploy", "shop-web"}, nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(err.Error(), "target failed to become healthy") {
		t.Fatalf("deploy: %v, want an ExitError with status 1 and the stderr", err)
	}
	if strings.Contains(err.Error()+ee.Stderr, "s3cret") {
		t.Errorf("a secret in the exec's stderr was not masked: %v / %q", err, ee.Stderr)
	}
	if len(cli.argv) != 0 {
		t.Fatalf("the CLI ran %q", cli.argv)
	}

	// What the API cannot or must not do goes to the CLI, unchanged.
	fallthroughs := [][]string{
		{"docker", "exec", "missing", "kamal-proxy", "list"}, // no such container: the CLI answers as before
		{"docker", "exec", "-i", "kamal-proxy", "sh"},        // options
		{"docker", "inspect", "kamal-proxy"},                 // not an exec
	}
	for _, argv := range fallthroughs {
		if out, err := r.Run(ctx, "h1", argv, nil); err != nil || string(out) != "cli" {
			t.Errorf("%q: %q, %v", argv, out, err)
		}
	}
	if _, err := r.Run(ctx, "h1", []string{"docker", "exec", "kamal-proxy", "cat"}, strings.NewReader("in")); err != nil {
		t.Error(err)
	}
	if _, err := r.Run(ctx, "h2", []string{"docker", "exec", "kamal-proxy", "kamal-proxy", "list"}, nil); err != nil { // host the API does not know
		t.Error(err)
	}
	if len(cli.argv) != len(fallthroughs)+2 || !slices.Equal(cli.argv[0], fallthroughs[0]) {
		t.Errorf("CLI ran %q", cli.argv)
	}
	if !api.usable("h1") {
		t.Error("a missing container marked the host's API broken")
	}
}

func TestDemux_CutFrame(t *testing.T) {
	b := frame(1, "hello")
	var out, errb bytes.Buffer
	if err := demux(bytes.NewReader(b[:len(b)-2]), &out, &errb); !errors.Is(err, ErrObserve) {
		t.Errorf("cut frame: %v, want ErrObserve", err)
	}
	if err := demux(bytes.NewReader(append(frame(3, "x"), b...)), &out, &errb); !errors.Is(err, ErrObserve) {
		t.Errorf("unknown stream: %v, want ErrObserve", err)
	}
}
