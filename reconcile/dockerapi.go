package reconcile

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/capstan-dev/capstan/internal/fence"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// DockerSocket is where the Docker Engine API listens on a host whose SSH
// sessions do not set DOCKER_HOST.
const DockerSocket = "/var/run/docker.sock"

// dockerAPI speaks to each host's Docker Engine API over an SSH
// unix-socket channel that stays open between calls and passes: no process
// starts on the host, so a call costs one request instead of an ssh
// session, a shell and a docker CLI. It is a fast path only: a host is
// reached this way once the observe script has told where its daemon
// listens (DOCKER_HOST), and a host where a call fails is marked broken
// and handled with the docker CLI from then on. Every call it makes is
// one the CLI path can repeat safely (start, stop, tag and inspect are
// idempotent).
type dockerAPI struct {
	dial    Dialer
	log     *slog.Logger
	mu      sync.Mutex
	homes   map[string]string // host -> the SSH user's home, from the observe script
	sockets map[string]string // host -> socket path, from the observe script
	clients map[string]*http.Client
	broken  map[string]time.Time // host -> when a call last failed
	calls   atomic.Uint64        // requests made, for round-trip counts
}

// brokenFor is how long a host whose API call failed is handled with the
// CLI before the API is tried again.
const brokenFor = time.Minute

// socketFor maps a session's DOCKER_HOST and docker context to the unix
// socket to dial, or "" when the CLI talks to a daemon elsewhere (tcp://,
// ssh://, or a context other than default, which DOCKER_HOST overrides).
func socketFor(dockerHost, dockerContext string) string {
	switch {
	case strings.HasPrefix(dockerHost, "unix://"):
		return strings.TrimPrefix(dockerHost, "unix://")
	case dockerHost != "":
		return ""
	case dockerContext == "" || dockerContext == "default":
		return DockerSocket
	}
	return ""
}

// learn records host's home and where its daemon listens, as the observe
// script saw them.
func (d *dockerAPI) learn(host, home, dockerHost, dockerContext string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sockets == nil {
		d.sockets, d.homes = map[string]string{}, map[string]string{}
	}
	sock := socketFor(dockerHost, dockerContext)
	if old, ok := d.sockets[host]; ok && old != sock {
		delete(d.clients, host) // its channels go to the old socket
	}
	d.homes[host], d.sockets[host] = home, sock
}

// home is host's home as learned.
func (d *dockerAPI) home(host string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.homes[host]
	return h, ok
}

func (d *dockerAPI) client(host string) *http.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.clients == nil {
		d.clients = map[string]*http.Client{}
	}
	c := d.clients[host]
	if c == nil {
		sock := d.sockets[host]
		c = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.dial.Dial(ctx, host, "unix", sock)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     5 * time.Minute,
		}}
		d.clients[host] = c
	}
	return c
}

// usable reports whether host's API may be tried.
func (d *dockerAPI) usable(host string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dial != nil && d.sockets[host] != "" && time.Since(d.broken[host]) > brokenFor
}

func (d *dockerAPI) markBroken(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.broken == nil {
		d.broken = map[string]time.Time{}
	}
	d.broken[host] = time.Now()
}

// apiError is a Docker API answer other than success.
type apiError struct {
	Status  int
	Message string
}

// Error names the status and at most maxAPIMessage bytes of the message.
func (e *apiError) Error() string {
	return fmt.Sprintf("docker API: %d %s", e.Status, boundText(e.Message, maxAPIMessage))
}

// errNotFound is the API's 404 (no such container or image).
func errNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// call makes one API request and decodes a JSON answer into out (when not
// nil). timeout bounds the request; 304 Not Modified counts as success.
func (d *dockerAPI) call(ctx context.Context, host, method, path string, q url.Values, timeout time.Duration, out any) error {
	return d.callWith(ctx, host, method, path, q, nil, timeout, out)
}

// callWith is call with in as the request's JSON body (when not nil).
func (d *dockerAPI) callWith(ctx context.Context, host, method, path string, q url.Values, in any, timeout time.Duration, out any) error {
	return d.do(ctx, host, method, path, q, "", in, timeout, func(body io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(body, maxAnswer+1))
		if err != nil || out == nil {
			return err
		}
		return decodeAnswer(path, b, out)
	})
}

// maxAnswer bounds the JSON answer of one API call.
const maxAnswer = 64 << 20

// decodeAnswer decodes the JSON answer b of the API call at path into out.
// An answer larger than maxAnswer, or that is not the JSON out expects
// (truncated, wrong types), is an error wrapping ErrObserve.
func decodeAnswer(path string, b []byte, out any) error {
	if len(b) > maxAnswer {
		return fmt.Errorf("%w: docker API %s: answer larger than %d bytes", ErrObserve, path, maxAnswer)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: docker API %s: %v", ErrObserve, path, err)
	}
	return nil
}

// do makes one API request (with an X-Registry-Auth header when auth is
// not "", with in as its JSON body when not nil), bounded by timeout, and
// hands a successful answer's body to read; 304 Not Modified is a success
// without a body, any other status from 300 up an *apiError.
func (d *dockerAPI) do(ctx context.Context, host, method, path string, q url.Values, auth string, in any, timeout time.Duration, read func(io.Reader) error) (err error) {
	if err := fence.Check(ctx); err != nil {
		return fmt.Errorf("docker API on %s: %w", host, err)
	}
	d.calls.Add(1)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		if d.log != nil {
			// An *apiError carries the daemon's words, which may quote a
			// secret; only its status is logged here (the caller redacts
			// the message before it shows it).
			var logged any = err
			var ae *apiError
			if errors.As(err, &ae) {
				logged = fmt.Sprintf("docker API: %d", ae.Status)
			}
			d.log.Debug("docker API", "host", host, "method", method, "path", path, "query", q.Encode(), "duration", time.Since(start), "err", logged)
		}
	}()
	u := &url.URL{Scheme: "http", Host: "docker", Path: path, RawQuery: q.Encode()}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("X-Registry-Auth", auth)
	}
	resp, err := d.client(host).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return nil
	case resp.StatusCode >= 300:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return newAPIError(resp.StatusCode, body)
	}
	return read(resp.Body)
}

// maxAPIMessage bounds how much of the daemon's message an *apiError's
// text shows, so a hostile or broken daemon cannot flood logs and state.
// The whole message is kept (it is redacted before it is shown, and a
// secret cut in two would escape the redactor).
const maxAPIMessage = 512

// newAPIError reads an error answer: Docker's {"message": ...}, else the
// body's text, as valid UTF-8.
func newAPIError(status int, body []byte) *apiError {
	var m struct{ Message string }
	_ = json.Unmarshal(body, &m)
	msg := m.Message
	if msg == "" {
		msg = string(body)
	}
	return &apiError{Status: status, Message: strings.TrimSpace(strings.ToValidUTF8(msg, "\ufffd"))}
}

// boundText returns s as valid UTF-8, trimmed of surrounding space and cut
// to at most n bytes (on a rune boundary).
func boundText(s string, n int) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\ufffd"))
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// apiTimeout bounds API calls that do not wait for a container.
const apiTimeout = 15 * time.Second

// apiContainer is one entry of GET /containers/json.
type apiContainer struct {
	ID      string            `json:"Id"`
	Names   []string          `json:"Names"`
	Image   string            `json:"Image"`
	State   string            `json:"State"`
	Status  string            `json:"Status"`
	Created int64             `json:"Created"`
	Labels  map[string]string `json:"Labels"`
	Network struct {
		Networks map[string]json.RawMessage `json:"Networks"`
	} `json:"NetworkSettings"`
}

// containers lists every container of host, newest first, in the shape the
// observe script produces.
func (d *dockerAPI) containers(ctx context.Context, host string) ([]Container, error) {
	var list []apiContainer
	if err := d.call(ctx, host, http.MethodGet, "/containers/json", url.Values{"all": {"1"}}, apiTimeout, &list); err != nil {
		return nil, err
	}
	return containersFrom(list), nil
}

// containersFrom converts the entries of GET /containers/json to
// Containers, newest first: names lose Docker's leading "/", networks are
// sorted. Missing fields stay zero.
func containersFrom(list []apiContainer) []Container {
	out := make([]Container, 0, len(list))
	for _, a := range list {
		c := Container{ID: a.ID, Image: a.Image, State: a.State, Status: a.Status, Created: time.Unix(a.Created, 0).UTC(),
			Service: a.Labels[LabelService], Role: a.Labels[LabelRole], Destination: a.Labels[LabelDestination],
			Fingerprint: a.Labels[LabelFingerprint], ImageTitle: a.Labels[LabelImageTitle]}
		_, c.HasDest = a.Labels[LabelDestination]
		if len(a.Names) > 0 {
			c.Name = strings.TrimPrefix(a.Names[0], "/")
		}
		for n, raw := range a.Network.Networks {
			c.Networks = append(c.Networks, n)
			if n == kamal.DefaultNetwork {
				var ep struct{ IPAddress string }
				if json.Unmarshal(raw, &ep) == nil {
					c.IP = ep.IPAddress
				}
			}
		}
		sort.Strings(c.Networks)
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// imageInfo is what the pull check needs of a local image.
type imageInfo struct {
	RepoDigests []string `json:"RepoDigests"`
	Config      struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

// image inspects a local image; found is false when the host lacks it.
func (d *dockerAPI) image(ctx context.Context, host, ref string) (info imageInfo, found bool, err error) {
	err = d.call(ctx, host, http.MethodGet, "/images/"+ref+"/json", nil, apiTimeout, &info)
	if errNotFound(err) {
		return info, false, nil
	}
	return info, err == nil, err
}

// apiInspect is the part of GET /containers/{id}/json apply reads.
type apiInspect struct {
	ID           string `json:"Id"`
	Name         string `json:"Name"`
	RestartCount int    `json:"RestartCount"`
	State        struct {
		Status   string `json:"Status"`
		ExitCode int    `json:"ExitCode"`
		Health   *struct {
			Status string `json:"Status"`
		} `json:"Health"`
	} `json:"State"`
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string `json:"IPAddress"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
}

func (in *apiInspect) live(network string) *liveContainer {
	return &liveContainer{ID: in.ID, Name: strings.TrimPrefix(in.Name, "/"), IP: in.NetworkSettings.Networks[network].IPAddress}
}

func (in *apiInspect) state() containerState {
	st := containerState{Status: in.State.Status, RestartCount: in.RestartCount, ExitCode: in.State.ExitCode}
	if in.State.Health != nil {
		st.Health = in.State.Health.Status
	}
	return st
}

func (d *dockerAPI) inspect(ctx context.Context, host, id string) (*apiInspect, error) {
	var in apiInspect
	if err := d.call(ctx, host, http.MethodGet, "/containers/"+id+"/json", nil, apiTimeout, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// start starts a container (already running is success).
func (d *dockerAPI) start(ctx context.Context, host, id string) error {
	return d.call(ctx, host, http.MethodPost, "/containers/"+id+"/start", nil, 2*time.Minute, nil)
}

// stop stops a container, waiting up to t seconds (nil: the container's
// own stop timeout, Docker's 10 s by default) before killing it.
func (d *dockerAPI) stop(ctx context.Context, host, id string, t *int) error {
	q := url.Values{}
	wait := 10 * time.Minute // the container's own stop timeout, unknown here; ctx bounds it too
	if t != nil {
		q.Set("t", strconv.Itoa(*t))
		wait = time.Duration(*t)*time.Second + time.Minute
	}
	return d.call(ctx, host, http.MethodPost, "/containers/"+id+"/stop", q, wait, nil)
}

// splitRef splits an image reference into what the pull API takes:
// repository and tag, or repository and digest.
func splitRef(ref string) (repo, tag string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

// registryAuth is the X-Registry-Auth header for a pull: the credentials
// travel to the host's daemon inside the SSH channel, never on a command
// line, and are not stored on the host.
func registryAuth(server, user, password string) string {
	b, _ := json.Marshal(map[string]string{"username": user, "password": password, "serveraddress": server})
	return base64.URLEncoding.EncodeToString(b)
}

// pullTimeout bounds one image pull.
const pullTimeout = 30 * time.Minute

// pull pulls ref with the given X-Registry-Auth header ("" for none). The
// daemon answers with a progress stream that carries any error.
func (d *dockerAPI) pull(ctx context.Context, host, ref, auth string) error {
	repo, tag := splitRef(ref)
	q := url.Values{"fromImage": {repo}, "tag": {tag}}
	return d.do(ctx, host, http.MethodPost, "/images/create", q, auth, nil, pullTimeout, readPull)
}

// readPull reads the progress stream of a pull (one JSON message after
// another) to its end: nil when it ends without an error message, an
// *apiError carrying the first error message, and an error wrapping
// ErrObserve when the stream is not JSON messages or is cut in the middle
// of one.
func readPull(body io.Reader) error {
	dec := json.NewDecoder(body)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("%w: docker API pull progress: %v", ErrObserve, err)
		}
		if msg.Error != "" || msg.ErrorDetail.Message != "" {
			return &apiError{Status: http.StatusInternalServerError, Message: cmp.Or(msg.ErrorDetail.Message, msg.Error)}
		}
	}
}

// remove removes a stopped container.
func (d *dockerAPI) remove(ctx context.Context, host, ref string) error {
	return d.call(ctx, host, http.MethodDelete, "/containers/"+ref, nil, time.Minute, nil)
}

// rename gives a container a new name.
func (d *dockerAPI) rename(ctx context.Context, host, ref, name string) error {
	return d.call(ctx, host, http.MethodPost, "/containers/"+ref+"/rename", url.Values{"name": {name}}, apiTimeout, nil)
}

// tag adds repo:tag to a local image.
func (d *dockerAPI) tag(ctx context.Context, host, image, repo, tag string) error {
	return d.call(ctx, host, http.MethodPost, "/images/"+image+"/tag", url.Values{"repo": {repo}, "tag": {tag}}, apiTimeout, nil)
}
