package kamalproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// loopDialer reaches addr (a test server) whatever the container address.
type loopDialer struct {
	addr  string
	dials atomic.Int32
}

func (l *loopDialer) Dial(ctx context.Context, host, network, _ string) (net.Conn, error) {
	l.dials.Add(1)
	var d net.Dialer
	return d.DialContext(ctx, network, l.addr)
}

// TestDriver_ProbeFirst: with ProbeFirst, deploy is called only once the
// new container answers its health check (with kamal-proxy's Host:
// container:port); a container that never does fails as unhealthy with no
// deploy call.
func TestDriver_ProbeFirst(t *testing.T) {
	ready := time.Now().Add(300 * time.Millisecond)
	var hosts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts = append(hosts, r.Host)
		if r.URL.Path != "/up" || time.Now().Before(ready) {
			http.Error(w, "booting", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	to := proxy.Target{Container: "2a271781744a", Port: 3000, IP: netip.MustParseAddr("172.18.0.7")}
	argv, _ := DeployArgs(Settings{}, transcriptRoute, to)
	var deployedAt time.Time
	r := &script{t: t, steps: []step{{argv: argv}}}
	d, _ := New(runFunc(func(ctx context.Context, host string, a []string) ([]byte, error) {
		deployedAt = time.Now()
		return r.Run(ctx, host, a, nil)
	}), Settings{})
	dialer := &loopDialer{addr: srv.Listener.Addr().String()}
	d.ProbeFirst(dialer)
	if err := d.Switch(context.Background(), "10.0.0.1", transcriptRoute, proxy.Target{}, to); err != nil {
		t.Fatal(err)
	}
	r.done()
	if deployedAt.Before(ready) || dialer.dials.Load() < 2 {
		t.Errorf("deploy called %s before the container was up (%d probes)", ready.Sub(deployedAt), dialer.dials.Load())
	}
	if hosts[0] != "2a271781744a:3000" {
		t.Errorf("probe Host %q, want kamal-proxy's container:port", hosts[0])
	}

	ready = time.Now().Add(time.Hour) // never
	route := transcriptRoute
	route.Options.DeployTimeout = 200 * time.Millisecond
	r = &script{t: t}
	err := d.Switch(context.Background(), "10.0.0.1", route, proxy.Target{}, to)
	if !errors.Is(err, proxy.ErrUnhealthy) || len(r.calls) != 0 {
		t.Errorf("never healthy: err %v, calls %q", err, r.calls)
	}
}

type runFunc func(ctx context.Context, host string, argv []string) ([]byte, error)

func (f runFunc) Run(ctx context.Context, host string, argv []string, _ io.Reader) ([]byte, error) {
	return f(ctx, host, argv)
}
