package haproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// maxQuoted bounds how much of an answer an ErrParse error may quote.
const maxQuoted = 1024

// checkParseErr fails unless err wraps proxy.ErrParse and quotes a bounded
// part of the answer.
func checkParseErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, proxy.ErrParse) {
		t.Fatalf("error %v does not wrap ErrParse", err)
	}
	if len(err.Error()) > maxQuoted {
		t.Fatalf("error quotes %d bytes of the answer", len(err.Error()))
	}
}

// FuzzParseStat: any `show stat` answer is an error wrapping ErrParse, or
// server lines (never FRONTEND or BACKEND) with non-empty server names,
// no more of them than there are lines.
func FuzzParseStat(f *testing.F) {
	for _, s := range []string{capturedStat, "", "No such backend.\n", "# pxname,svname\napp,v1\n", "# pxname,svname,scur,status\napp,v1,x,UP\n",
		"# pxname,svname,scur,status\napp,FRONTEND,1,OPEN\napp,BACKEND,0,UP\napp,v1,0,UP\n", "# pxname,svname,scur,status\n\"app,v1,0,UP\n",
		"# pxname,svname,scur,status\napp\n", "# pxname,svname,scur,status\napp,v1,-5,UP,extra,fields\n", "# \n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		stats, err := ParseStat(out)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		if len(stats) > strings.Count(out, "\n")+strings.Count(out, "\r")+1 {
			t.Fatalf("%d stats from %d lines", len(stats), strings.Count(out, "\n")+1)
		}
		for _, s := range stats {
			if s.Server == "FRONTEND" || s.Server == "BACKEND" {
				t.Fatalf("summary line kept: %+v", s)
			}
		}
	})
}

// FuzzParseServersState: any `show servers state` answer is an error
// wrapping ErrParse, or states with a valid address and names without
// spaces; it never indexes past a short row.
func FuzzParseServersState(f *testing.F) {
	hdr := strings.SplitN(capturedServersState, "\n", 3)[1]
	for _, s := range []string{capturedServersState, "", "Can't find backend.\n", "1\n# be_id be_name\n3 app\n",
		"1\n" + hdr + "\n3 app 2 v2 notanip 2 0 1 1 10 1 0 0 0 0 0 0 - 18082 - 0 0 - - 0\n",
		"1\n" + hdr + "\n3 app 2 v2 ::1 2 0 1 1 10 1 0 0 0 0 0 0 - 99999 - 0 0 - - 0\n",
		"1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\napp v1 10.0.0.1 2 0 80\n# comment\n\n",
		"1\n# be_name be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\napp v1 10.0.0.1 2 0 80\n",
		"2\n# be_name\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		states, err := ParseServersState(out)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		for _, s := range states {
			if !s.Addr.IsValid() || s.Backend == "" || s.Server == "" || strings.ContainsAny(s.Backend+s.Server, " \t\n") {
				t.Fatalf("state %+v", s)
			}
		}
	})
}

// FuzzParseBackends: any `show backend` answer is an error wrapping
// ErrParse, or trimmed, non-empty names.
func FuzzParseBackends(f *testing.F) {
	for _, s := range []string{"# name\nstats\napp-web\n", "# name\n", "", "Unknown command.\n", "# name\n  \n\x00\n", "# names\r\na\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		names, err := ParseBackends(out)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		for _, n := range names {
			if n == "" || n != strings.TrimSpace(n) || strings.Contains(n, "\n") {
				t.Fatalf("backend name %q", n)
			}
		}
	})
}

// FuzzParseBoot: the boot script's output splits into a state without
// surrounding space and the configuration after the marker, or an error
// wrapping ErrProxy that quotes a bounded part of it.
func FuzzParseBoot(f *testing.F) {
	for _, s := range []string{"true\n" + bootMarker + "\nglobal\n  maxconn 100\n", "missing\n" + bootMarker + "\n", "", "true\n", bootMarker + "\n" + bootMarker + "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		state, cfg, err := parseBoot(out)
		if err != nil {
			if !errors.Is(err, proxy.ErrProxy) || len(err.Error()) > maxQuoted {
				t.Fatalf("error %.300v", err)
			}
			return
		}
		if state != strings.TrimSpace(state) || len(cfg) >= len(out) {
			t.Fatalf("state %q, %d bytes of config from %d", state, len(cfg), len(out))
		}
	})
}

// TestParsers_Hostile: answers with 64 KB lines, NUL bytes and unicode
// are ErrParse errors that quote at most a bounded part of the answer.
func TestParsers_Hostile(t *testing.T) {
	huge := strings.Repeat("x", 64<<10)
	for name, out := range map[string]string{
		"huge garbage":       huge + "\n",
		"NUL bytes":          "\x00\x00\x00\n",
		"unicode":            "ünï ウェブ 🚢\n",
		"cut unicode at 200": strings.Repeat("a", 199) + "ü" + huge,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseStat(out)
			checkParseErr(t, err)
			_, err = ParseServersState(out)
			checkParseErr(t, err)
			_, err = ParseBackends(out)
			checkParseErr(t, err)
		})
	}
	t.Run("huge stat cells", func(t *testing.T) {
		for _, out := range []string{
			"# pxname,svname,scur,status\napp,v1," + huge + ",UP\n",
			"# pxname,svname,scur,status\napp," + huge + ",x,UP\n",
		} {
			_, err := ParseStat(out)
			checkParseErr(t, err)
		}
	})
	t.Run("short rows", func(t *testing.T) {
		for _, out := range []string{
			"1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\napp v1 10.0.0.1\n",
			"1\n# be_name be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\napp v1 10.0.0.1 2 0 80\n",
			"1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\napp v1 10.0.0.1 2 0 " + huge + "\n",
			"1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_port\napp v1 10.0.0.1\x00 2 0 80\n",
		} {
			_, err := ParseServersState(out)
			checkParseErr(t, err)
		}
	})
}

// TestClient_EndlessAnswer: a runtime API that enters prompt mode and then
// streams without ever printing a prompt again is cut at maxResponse with
// ErrUnreachable; the client does not read forever.
func TestClient_EndlessAnswer(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "flood.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var sent atomic.Int64
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		if _, err := r.ReadString('\n'); err != nil { // "prompt"
			return
		}
		if _, err := io.WriteString(conn, "\n> "); err != nil {
			return
		}
		if _, err := r.ReadString('\n'); err != nil { // the command
			return
		}
		chunk := []byte(strings.Repeat("app,v1,0,UP\n", 4096))
		for {
			n, err := conn.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	c := NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", l.Addr().String())
	}, ClientOptions{CommandTimeout: 30 * time.Second})
	defer c.Close()
	_, err = c.ShowStat(context.Background(), "app")
	if !errors.Is(err, proxy.ErrUnreachable) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err = %v, want ErrUnreachable for an answer too long", err)
	}
	if n := sent.Load(); n > 2*maxResponse {
		t.Errorf("the client read %d bytes, more than twice maxResponse", n)
	}
}
