package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// floodEnv configures a token for the API and a secret for every forge.
var floodEnv = map[string]string{"TOK": "api-s3cret", "GH": "gh-secret", "GL": "gl-token", "GT": "gt-secret"}

const floodConfig = "api_token_env: TOK\nwebhooks: {github_secret_env: GH, gitlab_token_env: GL, gitea_secret_env: GT}\n"

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func hubSignature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// TestWebhook_BodyLimit: a body declared over 1 MiB is refused with 413
// before a byte of it is read; an undeclared one is cut after 1 MiB; a
// request without a signature is refused with 401 unread; a body of
// exactly 1 MiB is accepted.
func TestWebhook_BodyLimit(t *testing.T) {
	d := newTestDaemon(t, floodConfig, floodEnv)
	h := d.Handler()
	tenMB := int64(10 << 20)
	for _, c := range []struct {
		name     string
		path     string
		length   int64 // Content-Length; -1: unknown (chunked)
		header   map[string]string
		code     int
		maxBytes int64 // bytes the handler may read
	}{
		{"declared 10 MB", "/webhooks/github", tenMB, map[string]string{"X-Hub-Signature-256": "sha256=00"}, 413, 0},
		{"declared 10 MB gitlab", "/webhooks/gitlab", tenMB, map[string]string{"X-Gitlab-Token": "gl-token"}, 413, 0},
		{"chunked 10 MB", "/webhooks/github", -1, map[string]string{"X-Hub-Signature-256": "sha256=00"}, 413, maxWebhookBody + 1},
		{"chunked 10 MB gitea", "/webhooks/gitea", -1, map[string]string{"X-Gitea-Signature": "00"}, 413, maxWebhookBody + 1},
		{"no signature", "/webhooks/github", -1, nil, 401, 0},
		{"wrong gitlab token", "/webhooks/gitlab", -1, map[string]string{"X-Gitlab-Token": "nope"}, 401, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := &countingReader{r: io.LimitReader(zeros{}, tenMB)}
			req := httptest.NewRequest("POST", c.path, body)
			req.ContentLength = c.length
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.code || body.n.Load() > c.maxBytes {
				t.Errorf("%d after reading %d bytes, want %d after at most %d", rec.Code, body.n.Load(), c.code, c.maxBytes)
			}
		})
	}
	t.Run("exactly 1 MiB", func(t *testing.T) {
		push := pushBody(d.repo)
		body := append(push, bytes.Repeat([]byte(" "), maxWebhookBody-len(push))...)
		code, resp := do(t, h, "POST", "/webhooks/github", bytes.NewReader(body), map[string]string{"X-Hub-Signature-256": hubSignature("gh-secret", body)})
		if code != 200 || !strings.Contains(resp, `"triggered":["demo"]`) {
			t.Errorf("%d %q, want demo triggered", code, resp)
		}
	})
}

// TestWebhook_ReadSlots: no more than maxWebhookReads bodies are read at
// once; a request waits for a slot while it lasts, then reads.
func TestWebhook_ReadSlots(t *testing.T) {
	reads := make(chan struct{}, maxWebhookReads)
	for range maxWebhookReads {
		reads <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	body := &countingReader{r: strings.NewReader("{}")}
	req := httptest.NewRequestWithContext(ctx, "POST", "/webhooks/github", body)
	if _, err := readWebhookBody(httptest.NewRecorder(), req, reads); !errors.Is(err, context.DeadlineExceeded) || body.n.Load() != 0 {
		t.Fatalf("with every slot taken: err %v after %d bytes, want a wait cut by the request's end", err, body.n.Load())
	}
	<-reads
	req = httptest.NewRequest("POST", "/webhooks/github", strings.NewReader("{}"))
	if b, err := readWebhookBody(httptest.NewRecorder(), req, reads); err != nil || string(b) != "{}" {
		t.Fatalf("with a free slot: %q, %v", b, err)
	}
	if len(reads) != maxWebhookReads-1 {
		t.Errorf("%d slots taken after the read, want the slot given back", len(reads))
	}
}

// floodResult is what one flood request got.
type floodResult struct {
	code int
	err  error
	took time.Duration
	big  bool
}

// cutWhileSending reports whether err is the server closing the connection
// while the request body was still being written.
func cutWhileSending(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// TestWebhook_FloodKeepsDaemonAnswering runs the daemon for real and sends
// 1,000 concurrent webhook posts with bad signatures (GitHub, GitLab and
// Gitea) and 10 MB bodies. Every one is refused with 401 or 413 within
// 10 s, and meanwhile /healthz and an authenticated GET /api/v1/apps
// keep answering and the app's loop completes its pass.
func TestWebhook_FloodKeepsDaemonAnswering(t *testing.T) {
	d := newTestDaemon(t, floodConfig, floodEnv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()
	base := "http://" + d.cfg.Listen
	probe := &http.Client{Timeout: 10 * time.Second}
	waitHealthy(t, probe, base)
	waitPass(t, probe, base, time.Time{}) // the first pass, before the flood

	const bad, big = 1000, 20
	flood := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: bad}}
	defer flood.CloseIdleConnections()
	start := make(chan struct{})
	results := make(chan floodResult, bad+big)
	var wg sync.WaitGroup
	push := pushBody(d.repo)
	for i := range bad + big {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results <- floodRequest(flood, base, i, i >= bad, push)
		}()
	}

	// Probes run all along the flood.
	type probeResult struct {
		what string
		err  error
		took time.Duration
	}
	probes := make(chan probeResult, 1024)
	floodDone := make(chan struct{})
	var probeWG sync.WaitGroup
	probeWG.Add(1)
	go func() {
		defer probeWG.Done()
		<-start
		for {
			for _, p := range []struct{ what, path, auth string }{
				{"healthz", "/healthz", ""},
				{"api", "/api/v1/apps", "Bearer api-s3cret"},
			} {
				began := time.Now()
				err := get(probe, base+p.path, p.auth)
				probes <- probeResult{p.what, err, time.Since(began)}
			}
			select {
			case <-floodDone:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	close(start)
	began := time.Now()
	// A forced sync asked for during the flood runs a new pass.
	if code, err := post(probe, base+"/api/v1/apps/demo/sync?force=1", "Bearer api-s3cret"); err != nil || code != http.StatusAccepted {
		t.Errorf("sync during the flood: %d %v", code, err)
	}
	wg.Wait()
	floodTook := time.Since(began)
	close(floodDone)
	probeWG.Wait()
	close(results)
	close(probes)

	codes, cut := map[int]int{}, 0
	for r := range results {
		switch {
		case r.big && cutWhileSending(r.err):
			// The server answered 413 and closed the connection while the
			// client still sent the body: the client may see the cut
			// before the answer. Refused unread either way.
			cut++
			continue
		case r.err != nil:
			t.Errorf("flood request failed: %v", r.err)
		case r.code != http.StatusUnauthorized && r.code != http.StatusRequestEntityTooLarge:
			t.Errorf("flood request answered %d, want 401 or 413", r.code)
		case r.took > 10*time.Second:
			t.Errorf("flood request took %s", r.took)
		}
		codes[r.code]++
	}
	n, slowest := 0, time.Duration(0)
	for p := range probes {
		n++
		slowest = max(slowest, p.took)
		if p.err != nil {
			t.Errorf("%s during the flood: %v", p.what, p.err)
		}
	}
	if n < 2 {
		t.Errorf("%d probes during the flood, want both /healthz and the API asked", n)
	}
	t.Logf("flood of %s: answers %v; %d probes answered, the slowest in %s", floodTook.Round(time.Millisecond), codes, n, slowest.Round(time.Millisecond))
	if n := codes[http.StatusRequestEntityTooLarge]; n+cut != big || n == 0 {
		t.Errorf("%d answers 413 and %d connections cut while sending, want %d together (every 10 MB body), most answered", n, cut, big)
	}
	waitPass(t, probe, base, began)
}

// floodRequest sends one hostile webhook: a bad signature of a small push,
// or (big) 10 MB with a bad signature, its length declared or not.
func floodRequest(c *http.Client, base string, i int, big bool, push []byte) floodResult {
	kinds := []struct{ path, header, value string }{
		{"/webhooks/github", "X-Hub-Signature-256", hubSignature("wrong", push)},
		{"/webhooks/gitlab", "X-Gitlab-Token", "wrong-token"},
		{"/webhooks/gitea", "X-Gitea-Signature", strings.TrimPrefix(hubSignature("wrong", push), "sha256=")},
	}
	k := kinds[i%len(kinds)]
	var body io.Reader = bytes.NewReader(push)
	length := int64(len(push))
	if big {
		k = kinds[0]
		body, length = io.LimitReader(zeros{}, 10<<20), 10<<20
		if i%2 == 1 {
			length = -1 // chunked: the server learns the size by reading
		}
	}
	req, err := http.NewRequest("POST", base+k.path, body)
	if err != nil {
		return floodResult{err: err}
	}
	req.ContentLength = length
	req.Header.Set(k.header, k.value)
	began := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return floodResult{err: err, took: time.Since(began), big: big}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return floodResult{code: resp.StatusCode, took: time.Since(began), big: big}
}

// get sends a GET with an Authorization header (when auth is not "") and
// wants 200.
func get(c *http.Client, url, auth string) error {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// waitHealthy waits for the daemon to listen.
func waitHealthy(t *testing.T, c *http.Client, base string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for get(c, base+"/healthz", "") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the daemon never answered /healthz")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPass waits for the app's loop to finish a pass after since (the
// repository has no Kamal config, so the pass is invalid).
func waitPass(t *testing.T, c *http.Client, base string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequest("GET", base+"/api/v1/apps/demo", nil)
		req.Header.Set("Authorization", "Bearer api-s3cret")
		var app struct {
			LastPass    time.Time `json:"last_pass"`
			LastOutcome string    `json:"last_outcome"`
		}
		if resp, err := c.Do(req); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&app)
			resp.Body.Close()
		}
		if app.LastOutcome != "" && app.LastPass.After(since) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app's loop finished no pass after %s (last: %s %q)", since.Format(time.RFC3339Nano), app.LastPass.Format(time.RFC3339Nano), app.LastOutcome)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// post sends an empty POST with an Authorization header.
func post(c *http.Client, url, auth string) (int, error) {
	req, err := http.NewRequest("POST", url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestWebhook_SlowBodyTimesOut: a body that stops arriving is given up
// after webhookReadTimeout (400) and its read slot is freed, so slow
// senders cannot hold the slots for ever: after as many stalled bodies as
// there are slots, a signed push is still read and answered.
func TestWebhook_SlowBodyTimesOut(t *testing.T) {
	defer func(d time.Duration) { webhookReadTimeout = d }(webhookReadTimeout)
	webhookReadTimeout = 300 * time.Millisecond
	d := newTestDaemon(t, floodConfig, floodEnv)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	began := time.Now()
	var conns []net.Conn
	for range maxWebhookReads {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /webhooks/github HTTP/1.1\r\nHost: capstan\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n{\"ref\":")
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to a stalled body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("stalled body: %d, want 400", resp.StatusCode)
		}
	}
	if took := time.Since(began); took > 8*time.Second {
		t.Errorf("%d stalled bodies answered after %s, want about %s", maxWebhookReads, took, webhookReadTimeout)
	}
	push := pushBody(d.repo)
	code, body := do(t, d.Handler(), "POST", "/webhooks/github", bytes.NewReader(push), map[string]string{"X-Hub-Signature-256": hubSignature("gh-secret", push)})
	if code != 200 || !strings.Contains(body, `"triggered":["demo"]`) {
		t.Errorf("a signed push after the stalls: %d %q", code, body)
	}
}
