package httpjson

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDo_RoundTrip(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		if r.Method != http.MethodPatch || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Token") != "t0k" {
			http.Error(w, "bad request shape", http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"echo": in["a"]})
	}))
	defer srv.Close()
	out, err := Do(context.Background(), srv.Client(), http.MethodPatch, srv.URL+"/x", http.Header{"X-Token": {"t0k"}}, map[string]string{"a": "b"})
	if err != nil || strings.TrimSpace(string(out)) != `{"echo":"b"}` {
		t.Fatalf("Do = %s, %v", out, err)
	}
}

func TestDo_ErrorsShowNoSecret(t *testing.T) {
	long := strings.Repeat("x", 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusNotFound
		if strings.Contains(r.URL.Path, "busy") {
			code = http.StatusTooManyRequests
		}
		http.Error(w, "no such thing "+long, code)
	}))
	secretURL := srv.URL + "/services/T0/B0/s3cretpath?token=q5ecret"
	hdr := http.Header{"Authorization": {"Bearer h3ader"}}
	_, err := Do(context.Background(), srv.Client(), http.MethodPost, secretURL, hdr, map[string]int{"n": 1})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 404 || se.Retryable() {
		t.Fatalf("err = %v, want a non-retryable 404 StatusError", err)
	}
	if len(se.Body) > MaxErrorBody || !strings.HasPrefix(se.Body, "no such thing") {
		t.Errorf("error body %d bytes: %q", len(se.Body), se.Body)
	}
	if _, err := Do(context.Background(), srv.Client(), http.MethodGet, srv.URL+"/busy", nil, nil); !errors.As(err, &se) || !se.Retryable() {
		t.Errorf("429: %v, want retryable", err)
	}
	srv.Close()
	_, terr := Do(context.Background(), srv.Client(), http.MethodPost, secretURL, hdr, nil)
	if terr == nil {
		t.Fatal("no error from a closed server")
	}
	_, berr := Do(context.Background(), nil, http.MethodPost, "http://[::1", hdr, nil)
	if !errors.Is(berr, ErrRequest) {
		t.Errorf("malformed URL: %v, want ErrRequest", berr)
	}
	for _, e := range []error{err, terr, berr} {
		for _, s := range []string{"s3cretpath", "q5ecret", "h3ader"} {
			if strings.Contains(e.Error(), s) {
				t.Errorf("error %q shows %s", e, s)
			}
		}
	}
}
