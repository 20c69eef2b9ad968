package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Probe sends one `GET path` with Host host over a connection from dial and
// expects a 2xx answer; redirects are not followed (kamal-proxy counts a
// redirect that does not end in 2xx as a failure too). A non-2xx answer or
// a transport error wraps proxy.ErrUnhealthy. The caller bounds it with ctx.
func Probe(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), host, path string) error {
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return fmt.Errorf("%w: %w: %w", proxy.ErrUnhealthy, proxy.ErrInvalid, err)
	}
	req.Header.Set("User-Agent", "capstan")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: GET %s: %w", proxy.ErrUnhealthy, path, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: GET %s: %s", proxy.ErrUnhealthy, path, resp.Status)
	}
	return nil
}

// WaitHealthy probes until the first success, like kamal-proxy's deploy,
// each probe bounded by hc.Timeout, giving up after deployTimeout with an
// error wrapping proxy.ErrUnhealthy and the last failure. Zero values take
// the proxy defaults. The first probe goes at once; the next ones after
// 20 ms, doubling up to hc.Interval: a new container usually answers
// within milliseconds of its start, and waiting a whole interval after a
// first refused connection would add up to that interval to every switch.
func WaitHealthy(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), host string, hc proxy.HealthCheck, deployTimeout time.Duration) error {
	o := proxy.Options{HealthCheck: hc, DeployTimeout: deployTimeout}.WithDefaults()
	hc, deployTimeout = o.HealthCheck, o.DeployTimeout
	ctx, cancel := context.WithTimeout(ctx, deployTimeout)
	defer cancel()
	wait := firstRetry
	for {
		pctx, pcancel := context.WithTimeout(ctx, hc.Timeout)
		err := Probe(pctx, dial, host, hc.Path)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("target failed to become healthy within %s: %w", deployTimeout, err)
			}
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, hc.Interval)
	}
}

// firstRetry is the wait after the first failed probe.
const firstRetry = 20 * time.Millisecond
