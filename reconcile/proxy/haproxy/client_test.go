package haproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

type nopHost struct{}

func (nopHost) Run(context.Context, string, []string, io.Reader) ([]byte, error) { return nil, nil }
func (nopHost) Dial(context.Context, string, string, string) (net.Conn, error) {
	return nil, errors.New("no dial")
}

// startPlain runs haproxy with config text (socket and bind filled in) and
// returns a dial func for its socket and the frontend URL.
func startPlain(t *testing.T, tmpl string) (DialFunc, string, *haproxyProc) {
	t.Helper()
	bin := haproxyBin(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	port := strconv.Itoa(freePort(t))
	cfg := strings.NewReplacer("SOCKET", sock, "BIND", "127.0.0.1:"+port).Replace(tmpl)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &haproxyProc{t: t, bin: bin, cfg: path, socket: sock, logf: filepath.Join(dir, "log")}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	return dial, "http://127.0.0.1:" + port, p
}

const plainConfig = `global
    stats socket SOCKET mode 600 level admin expose-fd listeners
    stats timeout 1s
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend http
    bind BIND
    default_backend app-web
backend app-web
`

// TestClient_ReconnectsAfterEOF: HAProxy closes the kept channel (here by
// restarting; in production also after stats timeout), the next command
// reconnects once and succeeds.
func TestClient_ReconnectsAfterEOF(t *testing.T) {
	raw, _, p := startPlain(t, plainConfig)
	var dials atomic.Int32
	dial := func(ctx context.Context) (net.Conn, error) { dials.Add(1); return raw(ctx) }
	c := NewClient(dial, ClientOptions{IdleTimeout: time.Minute}) // no proactive reconnect
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Backends(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Backends(ctx); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("dials = %d, want 1 kept channel", n)
	}
	p.stop()
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	names, err := c.Backends(ctx)
	if err != nil {
		t.Fatalf("after idle close: %v", err)
	}
	if len(names) != 1 || names[0] != "app-web" {
		t.Errorf("backends = %q", names)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("dials = %d, want 2 (one reconnect)", n)
	}
	// Idle longer than IdleTimeout: replaced before use, no error either.
	c2 := NewClient(dial, ClientOptions{IdleTimeout: 50 * time.Millisecond})
	defer c2.Close()
	for i := 0; i < 2; i++ {
		if _, err := c2.Backends(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := dials.Load(); n != 4 {
		t.Errorf("dials = %d, want 4 (idle channel replaced)", n)
	}
}

// TestClient_ClosesIdleChannel: a kept channel left unused is closed after
// IdleTimeout, so Clients that are no longer used do not hold HAProxy's few
// stats connections.
func TestClient_ClosesIdleChannel(t *testing.T) {
	raw, _, _ := startPlain(t, plainConfig)
	closed := make(chan struct{})
	dial := func(ctx context.Context) (net.Conn, error) {
		conn, err := raw(ctx)
		if err != nil {
			return nil, err
		}
		return &closeNotify{Conn: conn, closed: closed}, nil
	}
	c := NewClient(dial, ClientOptions{IdleTimeout: 50 * time.Millisecond})
	defer c.Close()
	if _, err := c.Backends(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle channel was not closed")
	}
}

type closeNotify struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotify) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestClient_PerCommandAndInteractiveAgree(t *testing.T) {
	dial, url, _ := startPlain(t, plainConfig)
	ctx := context.Background()
	backend := newAppBackend(t, "v1", &requestIDs{seen: map[string]int{}})
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(backend.port))
	for _, opt := range []ClientOptions{{PerCommand: true}, {}} {
		c := NewClient(dial, opt)
		if err := c.AddServer(ctx, "app-web", "v1", addr); err != nil {
			t.Fatalf("%+v: %v", opt, err)
		}
		st, err := c.ServersState(ctx, "app-web")
		if err != nil || len(st) != 1 || st[0].Ready() || !st[0].Maint() || st[0].Addr != addr {
			t.Fatalf("%+v: new server state %+v, %v (want in maintenance)", opt, st, err)
		}
		if err := c.SetState(ctx, "app-web", "v1", StateReady); err != nil {
			t.Fatal(err)
		}
		if got := get(t, url+"/"); got != "v1" {
			t.Fatalf("got %q", got)
		}
		stats, err := c.ShowStat(ctx, "app-web")
		if err != nil || len(stats) != 1 || stats[0].Server != "v1" || stats[0].Status != "no check" {
			t.Fatalf("stats %+v, %v", stats, err)
		}
		err = c.AddServer(ctx, "app-web", "v1", addr)
		if !errors.Is(err, proxy.ErrProxy) {
			t.Errorf("adding twice: err = %v, want ErrProxy", err)
		}
		if err := c.DelServer(ctx, "app-web", "v1"); !errors.Is(err, proxy.ErrProxy) {
			t.Errorf("deleting a ready server: err = %v, want ErrProxy", err)
		}
		if err := c.SetState(ctx, "app-web", "v1", StateMaint); err != nil {
			t.Fatal(err)
		}
		if err := c.DelServer(ctx, "app-web", "v1"); err != nil {
			t.Fatal(err)
		}
		if err := c.SetState(ctx, "app-web", "nope", StateReady); !errors.Is(err, proxy.ErrProxy) {
			t.Errorf("unknown server: err = %v, want ErrProxy", err)
		}
		c.Close()
	}
}

func TestClient_ValidatesBeforeSending(t *testing.T) {
	c := NewClient(func(context.Context) (net.Conn, error) {
		t.Fatal("dialled for an invalid command")
		return nil, nil
	}, ClientOptions{})
	ctx := context.Background()
	good := netip.MustParseAddrPort("172.18.0.5:3000")
	checks := map[string]error{
		"quote in server":   c.AddServer(ctx, "app-web", `v1"`, good),
		"space in server":   c.AddServer(ctx, "app-web", "v1 weight 0", good),
		"slash in backend":  c.AddServer(ctx, "app/web", "v1", good),
		"zero port":         c.AddServer(ctx, "app-web", "v1", netip.AddrPortFrom(good.Addr(), 0)),
		"unspecified addr":  c.AddServer(ctx, "app-web", "v1", netip.MustParseAddrPort("0.0.0.0:80")),
		"invalid addr":      c.AddServer(ctx, "app-web", "v1", netip.AddrPort{}),
		"unknown state":     c.SetState(ctx, "app-web", "v1", State("up")),
		"semicolon command": func() error { _, err := c.Exec(ctx, "show info; show stat"); return err }(),
		"newline command":   func() error { _, err := c.Exec(ctx, "show info\nshutdown frontend http"); return err }(),
		"bad del":           c.DelServer(ctx, "app-web", "-v1"),
		"bad stat backend":  func() error { _, err := c.ShowStat(ctx, "a b"); return err }(),
	}
	for name, err := range checks {
		if !errors.Is(err, proxy.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestClient_UnreachableAndTimeout(t *testing.T) {
	c := NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(t.TempDir(), "none.sock"))
	}, ClientOptions{})
	if _, err := c.Backends(context.Background()); !errors.Is(err, proxy.ErrUnreachable) {
		t.Errorf("err = %v, want ErrUnreachable", err)
	}
	// A socket that accepts and never answers: the command timeout fires.
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, "mute.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	c = NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", l.Addr().String())
	}, ClientOptions{CommandTimeout: 200 * time.Millisecond})
	start := time.Now()
	_, err = c.Backends(context.Background())
	if !errors.Is(err, proxy.ErrUnreachable) || time.Since(start) > 2*time.Second {
		t.Errorf("err = %v after %s, want ErrUnreachable within the timeout", err, time.Since(start))
	}
}

// Captured from HAProxy 2.6.12.
const (
	capturedStat = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo\n" +
		"app,v1,0,0,3,5,,7,0,0,,0,,0,0,0,0,MAINT,1,1,0,,,2,,,1,3,1,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:18081,,http,\n" +
		"app,v2,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,1,,,1,3,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:18082,,http,\n"
	capturedServersState = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n" +
		"3 app 2 v2 127.0.0.1 2 0 1 1 10 1 0 0 0 0 0 0 - 18082 - 0 0 - - 0\n" +
		"3 app 1 v1 127.0.0.1 0 1 1 1 8 1 0 0 0 0 0 0 - 18081 - 0 0 - - 0\n" +
		"3 app 3 v3 127.0.0.1 2 8 1 1 0 1 0 0 0 0 0 0 - 18083 - 0 0 - - 0\n"
)

func TestParseStat(t *testing.T) {
	stats, err := ParseStat(capturedStat)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 2 || stats[0] != (Stat{Backend: "app", Server: "v1", Sessions: 3, Status: "MAINT", Addr: "127.0.0.1:18081"}) ||
		stats[1].Sessions != 0 || stats[1].Status != "no check" {
		t.Errorf("stats = %+v", stats)
	}
	for _, bad := range []string{"", "No such backend.", "# pxname,svname\napp,v1\n", "# pxname,svname,scur,status\napp,v1,x,UP\n"} {
		if _, err := ParseStat(bad); !errors.Is(err, proxy.ErrParse) {
			t.Errorf("ParseStat(%q): err = %v, want ErrParse", bad, err)
		}
	}
}

func TestParseServersState(t *testing.T) {
	st, err := ParseServersState(capturedServersState)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 3 {
		t.Fatalf("states = %+v", st)
	}
	if !st[0].Ready() || st[0].Addr != netip.MustParseAddrPort("127.0.0.1:18082") {
		t.Errorf("v2 = %+v, want ready", st[0])
	}
	if st[1].Ready() || !st[1].Maint() {
		t.Errorf("v1 = %+v, want maintenance", st[1])
	}
	if st[2].Ready() || st[2].Maint() {
		t.Errorf("v3 = %+v, want draining (not ready, not maint)", st[2])
	}
	for _, bad := range []string{"", "Can't find backend.", "1\n# be_id be_name\n3 app\n", "1\n" + strings.SplitN(capturedServersState, "\n", 3)[1] + "\n3 app 2 v2 notanip 2 0 1 1 10 1 0 0 0 0 0 0 - 18082 - 0 0 - - 0\n"} {
		if _, err := ParseServersState(bad); !errors.Is(err, proxy.ErrParse) {
			t.Errorf("ParseServersState(%q): err = %v, want ErrParse", bad, err)
		}
	}
}
