// Package registry asks a container registry (Docker Registry HTTP API v2)
// whether an image tag exists and what digest it resolves to, so capstan
// never lets hosts pull a tag CI has not pushed yet.
package registry

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// ErrNotFound: the registry answered that the tag does not exist (yet).
var ErrNotFound = errors.New("image not found in registry")

// ErrPermanent: the registry cannot be asked in a way waiting will not fix
// (plain HTTP, TLS, credentials, DNS, a malformed manifest; see
// [Client.Resolve]). Wait returns it at once. The error's message names the
// registry and the fix; errors.As still reaches the underlying cause (a
// *net.DNSError, an x509 error, …) when there is one.
var ErrPermanent = errors.New("registry error that waiting cannot fix")

// permanentError is an error wrapping ErrPermanent (and its cause, when
// there is one) whose text is its message alone.
type permanentError struct {
	msg   string
	cause error
}

func (e *permanentError) Error() string { return e.msg }

func (e *permanentError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrPermanent}
	}
	return []error{ErrPermanent, e.cause}
}

// permanent returns a permanentError with a formatted message.
func permanent(cause error, format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...), cause: cause}
}

// Client resolves image references. The zero value uses HTTPS and no
// credentials.
type Client struct {
	Username, Password string
	// Insecure lists registry hosts ("host:port") spoken to over plain
	// HTTP (a lab or local registry).
	Insecure []string
	HTTP     *http.Client
}

var manifestTypes = strings.Join([]string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
}, ", ")

// Split parses "host[:port]/repo[:tag]" or "repo@sha256:…"; a reference
// without a registry host is on Docker Hub.
func Split(ref string) (host, repo, tagOrDigest string) {
	name, digest, hasDigest := strings.Cut(ref, "@")
	if !hasDigest {
		if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
			name, digest = name[:i], name[i+1:]
		} else {
			digest = "latest"
		}
	}
	first, rest, ok := strings.Cut(name, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		host, repo = first, rest
	} else {
		host, repo = "registry-1.docker.io", name
		if !strings.Contains(repo, "/") {
			repo = "library/" + repo
		}
	}
	return host, repo, digest
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *Client) scheme(host string) string {
	for _, h := range c.Insecure {
		if h == host {
			return "http"
		}
	}
	return "https"
}

// Resolve returns the digest of ref: a HEAD on the manifest, and a GET
// whose body is checked when the HEAD does not give a digest of a manifest.
// It errs with
//   - ErrNotFound when the registry answers that the tag (or repository)
//     does not exist, which waiting may fix (CI still pushing);
//   - an error wrapping ErrPermanent when waiting cannot fix it: a plain
//     HTTP registry spoken to over HTTPS, an untrusted certificate or a
//     failed TLS handshake, credentials refused (401 after the token
//     exchange, 403), a registry host that does not resolve, a malformed
//     manifest, another 4xx answer. Its message names the fix;
//   - any other error (connection refused, timeouts, 5xx, 429) is
//     transient.
func (c *Client) Resolve(ctx context.Context, ref string) (string, error) {
	host, repo, tag := Split(ref)
	u := fmt.Sprintf("%s://%s/v2/%s/manifests/%s", c.scheme(host), host, repo, tag)
	var token string
	for attempt := 0; attempt < 2; attempt++ {
		resp, err := c.manifest(ctx, http.MethodHead, u, token)
		if err != nil {
			return "", c.transportError(host, err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			d := resp.Header.Get("Docker-Content-Digest")
			switch {
			case d != "" && manifestType(resp.Header.Get("Content-Type")):
				return checkDigest(host, ref, d)
			case d == "" && strings.HasPrefix(tag, "sha256:"):
				return tag, nil
			}
			return c.getManifest(ctx, host, ref, u, token)
		case http.StatusUnauthorized:
			if attempt > 0 {
				return "", c.refused(host, repo, resp.Status)
			}
			token, err = c.token(ctx, host, resp.Header.Get("WWW-Authenticate"), repo)
			if err != nil {
				return "", err
			}
			if token == "" {
				return "", c.refused(host, repo, resp.Status)
			}
		default:
			return "", c.statusError(host, ref, resp.Status, resp.StatusCode)
		}
	}
	return "", c.refused(host, repo, "401 Unauthorized")
}

// manifest sends one manifest request with the credentials at hand.
func (c *Client) manifest(ctx context.Context, method, u, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestTypes)
	switch {
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	case c.Username != "":
		req.SetBasicAuth(c.Username, c.Password)
	}
	return c.http().Do(req)
}

// getManifest fetches the manifest and returns its digest (the
// Docker-Content-Digest header, else the sha256 of the body) when the body
// is a manifest.
func (c *Client) getManifest(ctx context.Context, host, ref, u, token string) (string, error) {
	resp, err := c.manifest(ctx, http.MethodGet, u, token)
	if err != nil {
		return "", c.transportError(host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", c.statusError(host, ref, resp.Status, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return "", fmt.Errorf("registry %s: read manifest of %s: %w", host, ref, err)
	}
	if err := checkManifest(body); err != nil {
		return "", permanent(err, "registry %s: malformed manifest (%v): is %s a container registry?", host, err, host)
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" {
		return checkDigest(host, ref, d)
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(body)), nil
}

// digestRE is the OCI digest grammar (algorithm ":" encoded), bounded.
var digestRE = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,256}$`)

// checkDigest returns d when it is a well-formed digest (a sha256 one has
// 64 lower-case hex digits); a malformed one wraps ErrPermanent: the
// digest is compared with what hosts pulled and must not be whatever text
// a broken registry sends.
func checkDigest(host, ref, d string) (string, error) {
	alg, enc, _ := strings.Cut(d, ":")
	if !digestRE.MatchString(d) || alg == "sha256" && !sha256RE.MatchString(enc) {
		return "", permanent(nil, "registry %s answered a malformed digest %q for %s: is %s a container registry?", host, quote(d), ref, host)
	}
	return d, nil
}

var sha256RE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// quote cuts text a registry sent to at most 200 bytes of valid UTF-8, to
// show in an error.
func quote(s string) string {
	if len(s) > 200 {
		return strings.ToValidUTF8(s[:200], "") + "…"
	}
	return strings.ToValidUTF8(s, "\ufffd")
}

// maxManifest bounds the manifest body read (registries cap them at 4 MiB).
const maxManifest = 4 << 20

// manifestType reports whether a HEAD's Content-Type can be a manifest's
// (absent, JSON or one of the manifest media types).
func manifestType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	return mt == "" || strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+prettyjws") || mt == "application/json"
}

// checkManifest accepts an image manifest or index, schema 1 or 2.
func checkManifest(body []byte) error {
	if len(body) > maxManifest {
		return errors.New("larger than 4 MiB")
	}
	var m struct {
		SchemaVersion int               `json:"schemaVersion"`
		Config        json.RawMessage   `json:"config"`
		Layers        []json.RawMessage `json:"layers"`
		Manifests     []json.RawMessage `json:"manifests"`
		FSLayers      []json.RawMessage `json:"fsLayers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	switch {
	case m.SchemaVersion != 1 && m.SchemaVersion != 2:
		return fmt.Errorf("schemaVersion %d", m.SchemaVersion)
	case m.Config == nil && m.Layers == nil && m.Manifests == nil && m.FSLayers == nil:
		return errors.New("no config, layers or manifests")
	}
	return nil
}

// refused is the error for credentials the registry does not accept.
func (c *Client) refused(host, repo, status string) error {
	status = quote(status)
	if c.Username == "" {
		return permanent(nil, "registry %s refused anonymous access to %s (%s): set registry.username and registry.password in deploy.yml", host, repo, status)
	}
	return permanent(nil, "registry %s refused the credentials (%s): check registry.username and registry.password in deploy.yml, and that %s exists and the account may pull it", host, status, repo)
}

// statusError classifies an answer other than 200 and 401.
func (c *Client) statusError(host, ref, status string, code int) error {
	status = quote(status)
	switch {
	case code == http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, ref)
	case code == http.StatusForbidden:
		_, repo, _ := Split(ref)
		return c.refused(host, repo, status)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("registry %s: %s for %s", host, status, ref)
	case code == http.StatusBadRequest && c.scheme(host) == "http":
		return permanent(nil, "registry %s answered %s for %s: if it speaks HTTPS, remove it from insecure_registries", host, status, ref)
	}
	return permanent(nil, "registry %s answered %s for %s", host, status, ref)
}

// transportError classifies a failed request (no HTTP answer).
func (c *Client) transportError(host string, err error) error {
	var (
		dns      *net.DNSError
		unknown  x509.UnknownAuthorityError
		name     x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
		notTLS   tls.RecordHeaderError
		hostname = host
	)
	if h, _, splitErr := net.SplitHostPort(host); splitErr == nil {
		hostname = h
	}
	switch {
	case errors.Is(err, http.ErrSchemeMismatch):
		return permanent(err, "registry %s speaks plain HTTP; add it to insecure_registries in capstan.yml (capstan apply: --insecure-registry %s)", host, host)
	case errors.As(err, &dns) && dns.IsNotFound:
		return permanent(err, "registry host %s does not resolve (%v): check the image's registry (registry.server in deploy.yml)", hostname, dns)
	case errors.As(err, &unknown):
		return permanent(err, "registry %s: TLS certificate not trusted (unknown authority): add its CA to this machine's trust store, or give the registry a certificate from a public CA: %v", host, unknown)
	case errors.As(err, &name):
		return permanent(err, "registry %s: TLS certificate is not valid for %s: %v", host, hostname, name)
	case errors.As(err, &invalid):
		return permanent(err, "registry %s: TLS certificate not trusted (%v): renew or fix the registry's certificate", host, invalid)
	case errors.As(err, &verify):
		return permanent(err, "registry %s: TLS certificate not trusted: %v", host, verify.Err)
	case errors.As(err, &alert):
		return permanent(err, "registry %s: TLS handshake failed (%v): check that %s speaks HTTPS with a protocol and cipher this client supports", host, alert, host)
	case errors.As(err, &notTLS):
		return permanent(err, "registry %s does not speak TLS (%v): check the registry address", host, notTLS)
	}
	return fmt.Errorf("registry %s: %w", host, err)
}

// token follows a Bearer challenge (Docker's token auth). A Basic
// challenge returns "" (the credentials were already sent). Errors are
// classified like Resolve's.
func (c *Client) token(ctx context.Context, host, challenge, repo string) (string, error) {
	scheme, p := parseChallenge(challenge)
	if !strings.EqualFold(scheme, "Bearer") {
		return "", nil
	}
	realm, err := url.Parse(p["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") || realm.Host == "" {
		return "", permanent(nil, "registry %s: bad token realm %q in its 401 challenge", host, quote(p["realm"]))
	}
	q := realm.Query()
	if p["service"] != "" {
		q.Set("service", p["service"])
	}
	scope := p["scope"]
	if scope == "" {
		scope = "repository:" + repo + ":pull"
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", err
	}
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return "", c.transportError(realm.Host, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", c.refused(host, repo, "token endpoint: "+resp.Status)
	case resp.StatusCode != http.StatusOK:
		return "", c.statusError(host, "token for "+repo, "token endpoint: "+resp.Status, resp.StatusCode)
	}
	t, err := decodeToken(resp.Body)
	if err != nil {
		return "", fmt.Errorf("registry %s: token endpoint answer: %w", host, err)
	}
	return t, nil
}

// parseChallenge splits a WWW-Authenticate challenge
// (`Bearer realm="…",service="…",scope="…"`) into its scheme and
// parameters. A quoted value may hold commas (a scope naming several
// actions); an unterminated quote runs to the end.
func parseChallenge(challenge string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(challenge), " ")
	params = map[string]string{}
	for rest != "" {
		var k, v string
		k, rest, _ = strings.Cut(strings.TrimLeft(rest, " ,"), "=")
		if strings.HasPrefix(rest, `"`) {
			v, rest, _ = strings.Cut(rest[1:], `"`)
		} else {
			v, rest, _ = strings.Cut(rest, ",")
		}
		if k = strings.TrimSpace(k); k != "" {
			params[k] = strings.TrimSpace(v)
		}
	}
	return scheme, params
}

// maxToken bounds the token endpoint's answer.
const maxToken = 1 << 20

// decodeToken reads a token endpoint's JSON answer: its token, else its
// access_token, else "". An answer that is not that JSON or is larger than
// maxToken is an error.
func decodeToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxToken+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxToken {
		return "", fmt.Errorf("answer larger than %d bytes", maxToken)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return "", err
	}
	return cmp.Or(t.Token, t.AccessToken), nil
}

// Wait resolves ref, retrying with capped exponential backoff and jitter
// while the failure is transient: the registry says the tag does not exist
// (CI still pushing) or cannot be reached (connection refused, timeouts,
// 5xx). onWait, when not nil, is called with the reason before each wait.
//
// An error wrapping ErrPermanent (see Resolve) returns at once, without a
// retry. At the timeout the error says how long Wait waited and wraps the
// last reason (ErrNotFound when the tag never appeared). When ctx itself
// ends, its error is wrapped.
func (c *Client) Wait(ctx context.Context, ref string, timeout time.Duration, onWait func(err error, next time.Duration)) (string, error) {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	gaveUp := func(last error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("wait for %s: %w (last: %v)", ref, ctx.Err(), last)
		}
		return fmt.Errorf("waited %s for %s (image wait %s): %w", time.Since(start).Round(time.Millisecond), ref, timeout, last)
	}
	delay := 500 * time.Millisecond
	var last error
	for {
		d, err := c.Resolve(wctx, ref)
		switch {
		case err == nil:
			return d, nil
		case errors.Is(err, ErrPermanent):
			return "", fmt.Errorf("image %s: %w", ref, err)
		case wctx.Err() != nil && last != nil:
			return "", gaveUp(last) // the request was cut by the deadline
		}
		last = err
		next := delay + time.Duration(rand.Int64N(int64(delay/4)+1))
		if dl, ok := wctx.Deadline(); ok && time.Until(dl) < next {
			return "", gaveUp(last)
		}
		if onWait != nil {
			onWait(err, next)
		}
		select {
		case <-wctx.Done():
			return "", gaveUp(last)
		case <-time.After(next):
		}
		delay = min(delay*2, 10*time.Second)
	}
}
