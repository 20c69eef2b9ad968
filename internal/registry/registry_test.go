package registry

import (
	"context"
	"errors"
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
			w.Header().Set("Docker-Content-Digest", "sha256:feed")
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
	if err != nil || d != "sha256:feed" || waits == 0 {
		t.Fatalf("Wait = %q, %v after %d waits", d, err, waits)
	}
	hits.Store(-1000)
	if _, err := c.Wait(context.Background(), ref, 1200*time.Millisecond, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Wait past its timeout: %v", err)
	}
}
