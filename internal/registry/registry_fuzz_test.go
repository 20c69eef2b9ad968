package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// answer is a registry that answers every request without a network: the
// manifest requests with status, Content-Type, Docker-Content-Digest and
// WWW-Authenticate as given and body for a GET; the token endpoint (a
// realm under /token) with tokenStatus and tokenBody.
type answer struct {
	status                         int
	contentType, digest, challenge string
	body                           string
	tokenStatus                    int
	tokenBody                      string
}

func (a answer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{Request: r, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	if strings.HasPrefix(r.URL.Path, "/token") {
		resp.StatusCode, resp.Body = a.tokenStatus, io.NopCloser(strings.NewReader(a.tokenBody))
	} else {
		resp.StatusCode = a.status
		for k, v := range map[string]string{"Content-Type": a.contentType, "Docker-Content-Digest": a.digest, "WWW-Authenticate": a.challenge} {
			if v != "" {
				resp.Header[http.CanonicalHeaderKey(k)] = []string{v} // not checked, as a broken registry might send it
			}
		}
		body := a.body
		if r.Method == http.MethodHead {
			body = ""
		}
		resp.Body = io.NopCloser(strings.NewReader(body))
	}
	resp.Status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	return resp, nil
}

func clientFor(a answer) *Client {
	return &Client{Username: "u", Password: "p", HTTP: &http.Client{Transport: a}}
}

const (
	manifestV2 = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"sha256:6d3b6c2b7e0c5e9f3a1d4c8b2a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3370706,"digest":"sha256:188c0c94c7c576fff0792aca7ec73d67a2f7f4cb3a6e53a84559337260b36964"}]}`
	ociIndex   = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:188c0c94c7c576fff0792aca7ec73d67a2f7f4cb3a6e53a84559337260b36964","size":1000,"platform":{"architecture":"amd64","os":"linux"}}]}`
	schema1    = `{"schemaVersion":1,"name":"acme/app","tag":"v1","fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"signatures":[]}`
	hubBearer  = `Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:acme/app:pull"`
)

// maxErr bounds the text of any error Resolve returns for a hostile answer.
const maxErr = 2048

// FuzzResolve: whatever a registry answers (status, headers, manifest,
// token endpoint), Resolve returns a well-formed digest, or an error of
// bounded length; it never panics.
func FuzzResolve(f *testing.F) {
	for _, a := range []answer{
		{status: 200, contentType: "application/vnd.docker.distribution.manifest.v2+json", digest: testDigest},
		{status: 200, contentType: "text/html", body: manifestV2},
		{status: 200, body: ociIndex},
		{status: 200, body: schema1, digest: "sha256:feed"},
		{status: 200, contentType: "text/html", body: "<html>hello</html>"},
		{status: 200, body: manifestV2[:40]},
		{status: 200, body: `{"schemaVersion":"2"}`},
		{status: 401, challenge: hubBearer, tokenStatus: 200, tokenBody: `{"token":"T"}`},
		{status: 401, challenge: hubBearer, tokenStatus: 200, tokenBody: `{"token":`},
		{status: 401, challenge: `Bearer realm="` + strings.Repeat("x", 1024) + `"`}, // 64 KB: TestResolve_HostileAnswers
		{status: 401, challenge: `Basic realm="registry"`},
		{status: 404}, {status: 500}, {status: 429}, {status: 403}, {status: 999}, {status: 302},
	} {
		f.Add(a.status, a.contentType, a.digest, a.challenge, a.body, a.tokenStatus, a.tokenBody)
	}
	f.Fuzz(func(t *testing.T, status int, contentType, digest, challenge, body string, tokenStatus int, tokenBody string) {
		if status < 100 || status > 999 || tokenStatus < 100 || tokenStatus > 999 {
			return // not an HTTP status
		}
		a := answer{status, contentType, digest, challenge, body, tokenStatus, tokenBody}
		d, err := clientFor(a).Resolve(context.Background(), "reg.example.com/acme/app:v1")
		if err != nil {
			if len(err.Error()) > maxErr {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if !digestRE.MatchString(d) {
			t.Fatalf("digest %q accepted", d)
		}
	})
}

// FuzzCheckManifest: a manifest is accepted only with schemaVersion 1 or 2
// and some config, layers or manifests, and never past 4 MiB.
func FuzzCheckManifest(f *testing.F) {
	for _, s := range []string{manifestV2, ociIndex, schema1, "", "{}", "null", `{"schemaVersion":2}`, `{"schemaVersion":3,"layers":[]}`,
		`{"schemaVersion":2,"config":null}`, `{"schemaVersion":2,"layers":{}}`, "[1,2]", manifestV2[:100]} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if checkManifest(body) != nil {
			return
		}
		if len(body) > maxManifest || !strings.Contains(string(body), "schemaVersion") {
			t.Fatalf("accepted %.200q", body)
		}
	})
}

// FuzzParseChallenge: parameters come back with trimmed, non-empty keys,
// and a challenge built from plain values gives them back.
func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{hubBearer, `Basic realm="registry"`, "", "Bearer", `Bearer realm=`, `Bearer realm="unterminated`, `Bearer ,,,=,=",`,
		`Bearer realm="https://a/t",scope="repository:a/b:pull,push"`, `bearer realm=https://a/t, service=reg`} {
		f.Add(s, "https://auth.example.com/token", "registry.example.com")
	}
	f.Fuzz(func(t *testing.T, challenge, realm, service string) {
		_, params := parseChallenge(challenge)
		for k := range params {
			if k == "" || k != strings.TrimSpace(k) {
				t.Fatalf("key %q", k)
			}
		}
		if strings.ContainsAny(realm+service, `"`) || strings.TrimSpace(realm) != realm || strings.TrimSpace(service) != service {
			return
		}
		scheme, p := parseChallenge(`Bearer realm="` + realm + `",service="` + service + `"`)
		if scheme != "Bearer" || p["realm"] != realm || p["service"] != service {
			t.Fatalf("scheme %q, params %q", scheme, p)
		}
	})
}

// FuzzDecodeToken: a token endpoint's answer gives its token, or an error.
func FuzzDecodeToken(f *testing.F) {
	for _, s := range []string{`{"token":"T"}`, `{"access_token":"A","expires_in":300}`, `{"token":"","access_token":""}`, "", `{"token":5}`, `{"token":`, "<html>"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := decodeToken(strings.NewReader(string(body)))
		if err == nil && len(tok) > len(body) {
			t.Fatalf("token of %d bytes from %d", len(tok), len(body))
		}
	})
}

// FuzzSplit: any reference splits into a registry host, a repository and
// a tag or digest, none empty unless the reference itself ends there.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"reg:5000/acme/app:v1", "alpine", "acme/app@sha256:abc", "localhost/app", "", ":", "@", "a/b/c:d@e", "[::1]:5000/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		host, repo, tag := Split(ref)
		if host == "" || repo == "" && !strings.Contains(ref, "/") {
			t.Fatalf("Split(%q) = %q %q %q", ref, host, repo, tag)
		}
	})
}

// TestResolve_HostileAnswers: truncated or mistyped manifests, a
// non-registry page, a manifest over 4 MiB, malformed digests, huge or
// odd status lines and challenges, and cut token answers are errors
// (ErrPermanent where waiting cannot fix them), of bounded length.
func TestResolve_HostileAnswers(t *testing.T) {
	huge := strings.Repeat("x", 64<<10)
	for _, c := range []struct {
		name      string
		a         answer
		permanent bool
	}{
		{"truncated manifest", answer{status: 200, contentType: "text/plain", body: manifestV2[:len(manifestV2)/2]}, true},
		{"schemaVersion a string", answer{status: 200, contentType: "text/plain", body: `{"schemaVersion":"2","layers":[]}`}, true},
		{"layers an object", answer{status: 200, contentType: "text/plain", body: `{"schemaVersion":2,"layers":{}}`}, true},
		{"an HTML page", answer{status: 200, contentType: "text/html", body: "<html>login</html>"}, true},
		{"5 MiB manifest", answer{status: 200, contentType: "text/plain", body: `{"schemaVersion":2,"layers":[],"x":"` + strings.Repeat("a", 5<<20) + `"}`}, true},
		{"digest with shell", answer{status: 200, contentType: "application/json", digest: "sha256:feed; rm -rf /"}, true},
		{"digest with NUL", answer{status: 200, contentType: "application/json", digest: "sha256:" + strings.Repeat("a", 63) + "\x00"}, true},
		{"64 KB digest", answer{status: 200, contentType: "application/json", digest: "sha256:" + huge}, true},
		{"unicode digest", answer{status: 200, contentType: "application/json", digest: "sha256:ünï" + strings.Repeat("a", 61)}, true},
		{"digest of a manifest GET", answer{status: 200, contentType: "text/html", body: manifestV2, digest: "sha256:short"}, true},
		{"64 KB realm", answer{status: 401, challenge: `Bearer realm="https://` + huge + `"`}, true},
		{"64 KB bad realm", answer{status: 401, challenge: `Bearer realm=":` + huge + `"`}, true},
		{"realm not http", answer{status: 401, challenge: `Bearer realm="file:///etc/passwd"`}, true},
		{"cut token answer", answer{status: 401, challenge: hubBearer, tokenStatus: 200, tokenBody: `{"token":"T`}, false},
		{"token a number", answer{status: 401, challenge: hubBearer, tokenStatus: 200, tokenBody: `{"token":5}`}, false},
		{"empty token", answer{status: 401, challenge: hubBearer, tokenStatus: 200, tokenBody: `{}`}, true},
		{"teapot", answer{status: 418}, true},
		{"server error", answer{status: 503}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := clientFor(c.a).Resolve(context.Background(), "reg.example.com/acme/app:v1")
			if err == nil {
				t.Fatalf("resolved to %.100q", d)
			}
			if errors.Is(err, ErrPermanent) != c.permanent {
				t.Errorf("permanent = %v, want %v: %.300v", errors.Is(err, ErrPermanent), c.permanent, err)
			}
			if len(err.Error()) > maxErr {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
		})
	}
	t.Run("huge status line", func(t *testing.T) {
		err := (&Client{}).statusError("reg", "reg/a:v1", "400 "+huge, 400)
		if len(err.Error()) > maxErr {
			t.Errorf("error of %d bytes", len(err.Error()))
		}
	})
	t.Run("token read error", func(t *testing.T) {
		if _, err := decodeToken(iotest.ErrReader(io.ErrUnexpectedEOF)); err == nil {
			t.Error("a failed read gave a token")
		}
	})
	t.Run("good answers still resolve", func(t *testing.T) {
		for _, a := range []answer{
			{status: 200, contentType: "application/vnd.oci.image.index.v1+json", digest: testDigest},
			{status: 200, contentType: "text/plain", body: schema1},
		} {
			if d, err := clientFor(a).Resolve(context.Background(), "reg.example.com/acme/app:v1"); err != nil || !digestRE.MatchString(d) {
				t.Errorf("%+v: %q %v", a, d, err)
			}
		}
	})
}
