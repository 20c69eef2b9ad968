package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSplit(t *testing.T) {
	for ref, want := range map[string]string{
		"10.231.0.1:5000/testapp:v1":    "10.231.0.1:5000 testapp v1",
		"ghcr.io/acme/app:abc":          "ghcr.io acme/app abc",
		"redis:7":                       "registry-1.docker.io library/redis 7",
		"acme/app":                      "registry-1.docker.io acme/app latest",
		"localhost/app@sha256:0123abcd": "localhost app sha256:0123abcd",
	} {
		h, r, tg := Split(ref)
		if got := h + " " + r + " " + tg; got != want {
			t.Errorf("%s: %s, want %s", ref, got, want)
		}
	}
}

// A registry that gets the tag after a few requests, behind token auth.
// testDigest is a well-formed manifest digest.
const testDigest = "sha256:6d3b6c2b7e0c5e9f3a1d4c8b2a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5"

func TestWait_UntilPushedWithTokenAuth(t *testing.T) {
	var hits atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			if u, p, _ := r.BasicAuth(); u != "lab" || p != "pw" || r.URL.Query().Get("scope") != "repository:acme/app:pull" {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			_, _ = w.Write([]byte(`{"token":"T"}`))
		case r.Header.Get("Authorization") != "Bearer T":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="reg"`)
			w.WriteHeader(http.StatusUnauthorized)
		case hits.Add(1) < 3:
			w.WriteHeader(http.StatusNotFound)
		default:
			if !strings.Contains(r.Header.Get("Accept"), "manifest.v2+json") {
				t.Errorf("accept %q", r.Header.Get("Accept"))
			}
			w.Header().Set("Docker-Content-Digest", testDigest)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	c := &Client{Username: "lab", Password: "pw", Insecure: []string{host}}
	ref := host + "/acme/app:v2"
	if _, err := c.Resolve(context.Background(), ref); !errors.Is(err, ErrNotFound) {
		t.Fatalf("first resolve: %v, want not found", err)
	}
	waits := 0
	d, err := c.Wait(context.Background(), ref, 20*time.Second, func(error, time.Duration) { waits++ })
	if err != nil || d != testDigest || waits == 0 {
		t.Fatalf("Wait = %q, %v after %d waits", d, err, waits)
	}
	hits.Store(-1000)
	if _, err := c.Wait(context.Background(), ref, 1200*time.Millisecond, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Wait past its timeout: %v", err)
	}
}

// dialCounter is an HTTP client that counts the connections it opens
// (DNS lookups included), with TLS as the default client (system roots).
func dialCounter() (*http.Client, *atomic.Int32) {
	var n atomic.Int32
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, network, addr)
	}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, &n
}

// quietServer starts an httptest server whose error log is discarded (TLS
// handshake errors are expected here); tls selects StartTLS.
func quietServer(t *testing.T, h http.HandlerFunc, tls bool) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

// TestWait_PermanentErrors: each failure waiting cannot fix returns at once
// an error wrapping ErrPermanent that names the fix, after one attempt.
func TestWait_PermanentErrors(t *testing.T) {
	var manifestHits atomic.Int32
	manifests := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				manifestHits.Add(1)
			}
			h(w, r)
		}
	}
	plain := quietServer(t, manifests(func(w http.ResponseWriter, r *http.Request) {}), false)
	untrusted := quietServer(t, manifests(func(w http.ResponseWriter, r *http.Request) {}), true)
	basic401 := quietServer(t, manifests(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="reg"`)
		w.WriteHeader(http.StatusUnauthorized)
	}), false)
	var bearer *httptest.Server
	bearer = quietServer(t, manifests(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" { // wrong password: the token endpoint refuses
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+bearer.URL+`/token",service="reg"`)
		w.WriteHeader(http.StatusUnauthorized)
	}), false)
	forbidden := quietServer(t, manifests(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}), false)
	html := quietServer(t, manifests(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>welcome to nginx</html>"))
	}), false)
	addr := func(s *httptest.Server) string { return s.Listener.Addr().String() }

	tests := []struct {
		name     string
		host     string
		insecure bool
		user     string
		dials    int32 // connections opened, -1: not checked
		hits     int32 // manifest requests answered
		want     []string
	}{
		{"plain HTTP over HTTPS", addr(plain), false, "", 1, 0, []string{"speaks plain HTTP", "insecure_registries"}},
		{"untrusted certificate", addr(untrusted), false, "", 1, 0, []string{"TLS certificate not trusted"}},
		{"HTTPS registry listed as insecure", addr(untrusted), true, "", 1, 0, []string{"400 Bad Request", "remove it from insecure_registries"}},
		{"401 basic", addr(basic401), true, "bot", -1, 1, []string{"refused the credentials (401 Unauthorized)", "registry.password"}},
		{"401 anonymous", addr(basic401), true, "", -1, 1, []string{"refused anonymous access", "registry.username"}},
		{"401 from the token endpoint", addr(bearer), true, "bot", -1, 1, []string{"refused the credentials (token endpoint: 401 Unauthorized)"}},
		{"403", addr(forbidden), true, "bot", -1, 1, []string{"refused the credentials (403 Forbidden)"}},
		{"malformed manifest", addr(html), true, "", -1, 2, []string{"malformed manifest", "not JSON"}},
		{"unresolvable host", "registry.invalid:5000", false, "", 1, 0, []string{"registry host registry.invalid does not resolve"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, dials := dialCounter()
			c := &Client{Username: tt.user, Password: "wrong", HTTP: hc}
			if tt.insecure {
				c.Insecure = []string{tt.host}
			}
			manifestHits.Store(0)
			retries := 0
			_, err := c.Wait(context.Background(), tt.host+"/acme/app:v1", time.Minute, func(error, time.Duration) { retries++ })
			if !errors.Is(err, ErrPermanent) || errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrPermanent", err)
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if retries != 0 || manifestHits.Load() != tt.hits || tt.dials >= 0 && dials.Load() != tt.dials {
				t.Errorf("retries %d, manifest requests %d (want %d), connections %d (want %d)", retries, manifestHits.Load(), tt.hits, dials.Load(), tt.dials)
			}
		})
	}
}

// The causes stay reachable under ErrPermanent.
func TestResolve_PermanentCauses(t *testing.T) {
	hc, _ := dialCounter()
	c := &Client{HTTP: hc}
	_, err := c.Resolve(context.Background(), "registry.invalid/acme/app:v1")
	var dns *net.DNSError
	if !errors.As(err, &dns) || !dns.IsNotFound {
		t.Errorf("unresolvable: %v, want a *net.DNSError", err)
	}
	srv := quietServer(t, func(http.ResponseWriter, *http.Request) {}, false)
	_, err = c.Resolve(context.Background(), srv.Listener.Addr().String()+"/acme/app:v1")
	if !errors.Is(err, http.ErrSchemeMismatch) {
		t.Errorf("plain HTTP: %v, want http.ErrSchemeMismatch", err)
	}
}

// Transient answers (503, 404, a refused connection) are retried until the
// tag appears; a HEAD without a digest falls back to a GET of the manifest.
func TestWait_TransientThenSuccess(t *testing.T) {
	const body = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`
	var hits atomic.Int32
	srv := quietServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch hits.Add(1) {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.WriteHeader(http.StatusNotFound)
		default:
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write([]byte(body))
		}
	}, false)
	host := srv.Listener.Addr().String()
	c := &Client{Insecure: []string{host}}
	var reasons []string
	d, err := c.Wait(context.Background(), host+"/acme/app:v1", 20*time.Second, func(err error, _ time.Duration) { reasons = append(reasons, err.Error()) })
	want := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(body)))
	if err != nil || d != want {
		t.Fatalf("Wait = %q, %v; want %s", d, err, want)
	}
	if len(reasons) != 2 || !strings.Contains(reasons[0], "503") || !strings.Contains(reasons[1], "not found") {
		t.Errorf("reasons %q", reasons)
	}

	// Nothing listening: retried until the timeout, which the error names
	// along with the last reason.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	c = &Client{Insecure: []string{closed}}
	retries := 0
	_, err = c.Wait(context.Background(), closed+"/acme/app:v1", 1200*time.Millisecond, func(error, time.Duration) { retries++ })
	if err == nil || errors.Is(err, ErrPermanent) || retries == 0 || !strings.Contains(err.Error(), "waited ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("closed port: %v after %d retries", err, retries)
	}
}
