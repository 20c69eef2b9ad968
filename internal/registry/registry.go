// Package registry asks a container registry (Docker Registry HTTP API v2)
// whether an image tag exists and what digest it resolves to, so capstan
// never lets hosts pull a tag CI has not pushed yet.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrNotFound: the registry answered that the tag does not exist (yet).
var ErrNotFound = errors.New("image not found in registry")

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

// Resolve returns the digest of ref (HEAD on the manifest), or an error
// wrapping ErrNotFound when the registry does not have it.
func (c *Client) Resolve(ctx context.Context, ref string) (string, error) {
	host, repo, tag := Split(ref)
	u := fmt.Sprintf("%s://%s/v2/%s/manifests/%s", c.scheme(host), host, repo, tag)
	var token string
	for attempt := 0; attempt < 2; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Accept", manifestTypes)
		switch {
		case token != "":
			req.Header.Set("Authorization", "Bearer "+token)
		case c.Username != "":
			req.SetBasicAuth(c.Username, c.Password)
		}
		resp, err := c.http().Do(req)
		if err != nil {
			return "", fmt.Errorf("registry %s: %w", host, err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			if d := resp.Header.Get("Docker-Content-Digest"); d != "" {
				return d, nil
			}
			if strings.HasPrefix(tag, "sha256:") {
				return tag, nil
			}
			return "", fmt.Errorf("registry %s: no digest for %s", host, ref)
		case http.StatusNotFound:
			return "", fmt.Errorf("%w: %s", ErrNotFound, ref)
		case http.StatusUnauthorized:
			if attempt > 0 {
				return "", fmt.Errorf("registry %s: unauthorized for %s", host, repo)
			}
			token, err = c.token(ctx, resp.Header.Get("WWW-Authenticate"), repo)
			if err != nil {
				return "", fmt.Errorf("registry %s: %w", host, err)
			}
			if token == "" {
				return "", fmt.Errorf("registry %s: unauthorized for %s", host, repo)
			}
		default:
			return "", fmt.Errorf("registry %s: %s for %s", host, resp.Status, ref)
		}
	}
	return "", fmt.Errorf("registry %s: unauthorized", host)
}

// token follows a Bearer challenge (Docker's token auth).
func (c *Client) token(ctx context.Context, challenge, repo string) (string, error) {
	scheme, params, _ := strings.Cut(challenge, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", nil // Basic: credentials were already sent
	}
	p := map[string]string{}
	for _, kv := range strings.Split(params, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		p[k] = strings.Trim(v, `"`)
	}
	realm, err := url.Parse(p["realm"])
	if err != nil || realm.Scheme == "" {
		return "", fmt.Errorf("bad token realm %q", p["realm"])
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
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint: %s", resp.Status)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil {
		return "", err
	}
	if t.Token != "" {
		return t.Token, nil
	}
	return t.AccessToken, nil
}

// Wait resolves ref, retrying with capped exponential backoff and jitter
// while the registry says it does not exist (CI still pushing) or cannot be
// reached, until timeout. onWait is called before each wait.
func (c *Client) Wait(ctx context.Context, ref string, timeout time.Duration, onWait func(err error, next time.Duration)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 500 * time.Millisecond
	for {
		d, err := c.Resolve(ctx, ref)
		if err == nil {
			return d, nil
		}
		next := delay + time.Duration(rand.Int64N(int64(delay/4)+1))
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < next {
			return "", fmt.Errorf("waited %s for %s: %w", timeout, ref, err)
		}
		if onWait != nil {
			onWait(err, next)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waited %s for %s: %w", timeout, ref, err)
		case <-time.After(next):
		}
		delay = min(delay*2, 10*time.Second)
	}
}
