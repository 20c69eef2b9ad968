package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// Labels capstan reads and writes on containers. service, role and
// destination are Kamal's own; capstan adds its fingerprint.
const (
	LabelService     = "service"
	LabelRole        = "role"
	LabelDestination = "destination"
	LabelFingerprint = "capstan.fingerprint"
	LabelImageTitle  = "org.opencontainers.image.title"
)

// Observed is what one host looks like now, as one round trip saw it.
type Observed struct {
	Host       string
	Containers []Container // every container on the host, newest first
	// Lock is the decoded content of Kamal's lock details file on this host
	// ("" when there is no lock).
	Lock string
	// Home is the SSH user's login directory.
	Home string
	// DockerHost is DOCKER_HOST in the SSH user's sessions ("" when unset):
	// where the docker CLI, and so capstan's Docker API channel, reaches
	// the daemon.
	DockerHost string
	// DockerContext is the docker CLI context in use (DOCKER_CONTEXT, or
	// the config file's currentContext); "" or "default" is the local
	// daemon.
	DockerContext string
	At            time.Time

	// Routes are the proxy's live routes by name; nil when the proxy could
	// not be asked (not running, or no routed role on the host).
	Routes map[string]proxy.LiveRoute

	// inspected holds `docker inspect` of containers the plan must adopt.
	inspected map[string]*inspected
}

// Container is one container as `docker ps -a` reports it.
type Container struct {
	ID          string
	Name        string
	Image       string
	State       string // created, running, paused, restarting, removing, exited, dead
	Status      string // Docker's text, e.g. "Up 3 minutes (healthy)"
	Created     time.Time
	Service     string // label service
	Role        string // label role
	Destination string // label destination
	HasDest     bool   // the destination label is present (Kamal sets it even when empty)
	Fingerprint string // label capstan.fingerprint
	ImageTitle  string // label org.opencontainers.image.title (kamal-proxy's image sets it)
	Networks    []string
	// IP is the container's address on the kamal network, "" when it is
	// not on it.
	IP string
}

// Health is the container's health check state from its status text:
// "healthy", "unhealthy", "starting", or "" without a health check.
func (c Container) Health() string {
	switch {
	case strings.Contains(c.Status, "(healthy)"):
		return "healthy"
	case strings.Contains(c.Status, "(unhealthy)"):
		return "unhealthy"
	case strings.Contains(c.Status, "(health: starting)"):
		return "starting"
	}
	return ""
}

// on reports whether the container is attached to network.
func (c Container) on(network string) bool { return slices.Contains(c.Networks, network) }

// Running reports whether the container is up (running and not restarting).
func (c Container) Running() bool { return c.State == "running" }

// psFormat is the Go template `docker ps` prints each container with: one
// JSON object per line, labels read one by one so no value can break the
// framing.
const psFormat = `{"id":{{json .ID}},"name":{{json .Names}},"image":{{json .Image}},"state":{{json .State}},"status":{{json .Status}},"created":{{json .CreatedAt}},"service":{{json (.Label "service")}},"role":{{json (.Label "role")}},"destination":{{json (.Label "destination")}},"labels":{{json .Labels}},"fingerprint":{{json (.Label "capstan.fingerprint")}},"title":{{json (.Label "org.opencontainers.image.title")}},"networks":{{json .Networks}}}`

const observeMarker = "--capstan-observe--"

// ObserveArgv is the one remote command that observes a host: every
// container (a single `docker ps`), the user's home directory and
// DOCKER_HOST, and Kamal's
// lock for lockDir (e.g. ".kamal/lock-myapp"), separated by marker lines.
func ObserveArgv(lockDir string) []string {
	script := `docker ps -a --no-trunc --format "$1" || exit $?
echo "$2"; printf '%s\n' "$HOME" "${DOCKER_HOST-}" "${DOCKER_CONTEXT-}"
grep -o '"currentContext": *"[^"]*"' "${DOCKER_CONFIG:-$HOME/.docker}/config.json" 2>/dev/null || true
docker network inspect kamal --format "$4" 2>/dev/null || true
echo "$2"; cat "$3/details" 2>/dev/null || true`
	return []string{"sh", "-c", script, "sh", psFormat, observeMarker, lockDir, networkFormat}
}

// networkFormat prints, for each container on the kamal network, a line
// "ip ID ADDRESS/PREFIX".
const networkFormat = `{{range $id, $c := .Containers}}ip {{$id}} {{$c.IPv4Address}}{{"\n"}}{{end}}`

// ParseObserve reads ObserveArgv's output.
func ParseObserve(host string, out []byte) (*Observed, error) {
	o := &Observed{Host: host, At: time.Now()}
	sections := bytes.SplitN(out, []byte(observeMarker+"\n"), 3)
	if len(sections) != 3 {
		return nil, fmt.Errorf("observe %s: %w: %d sections in the output", host, ErrObserve, len(sections))
	}
	sc := bufio.NewScanner(bytes.NewReader(sections[0]))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var raw struct {
			ID, Name, Image, State, Status, Created string
			Service, Role, Destination, Labels      string
			Fingerprint, Title, Networks            string
		}
		if err := json.Unmarshal(line, &raw); err != nil {
			return nil, fmt.Errorf("observe %s: %w: %v", host, ErrObserve, err)
		}
		c := Container{
			ID: raw.ID, Name: raw.Name, Image: raw.Image, State: raw.State, Status: raw.Status,
			Service: raw.Service, Role: raw.Role, Destination: raw.Destination,
			Fingerprint: raw.Fingerprint, ImageTitle: raw.Title,
		}
		c.HasDest = hasLabel(raw.Labels, LabelDestination)
		if raw.Networks != "" {
			c.Networks = strings.Split(raw.Networks, ",")
		}
		// Docker prints "2026-11-26 05:42:07 +0000 UTC".
		if t, err := time.Parse("2006-01-02 15:04:05 -0700 MST", raw.Created); err == nil {
			c.Created = t
		}
		o.Containers = append(o.Containers, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("observe %s: %w: %v", host, ErrObserve, err)
	}
	sort.SliceStable(o.Containers, func(i, j int) bool { return o.Containers[i].Created.After(o.Containers[j].Created) })
	lines := strings.Split(strings.TrimRight(string(sections[1]), "\n"), "\n")
	for len(lines) < 4 {
		lines = append(lines, "")
	}
	o.Home, o.DockerHost = strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
	// DOCKER_CONTEXT beats the config file's currentContext.
	o.DockerContext = strings.TrimSpace(lines[2])
	// The config file's line is there only when grep found it.
	if k, v, ok := strings.Cut(lines[3], ":"); ok && strings.Contains(k, "currentContext") && o.DockerContext == "" {
		o.DockerContext = strings.Trim(strings.TrimSpace(v), `"`)
	}
	setIPs(o.Containers, lines[3:])
	o.Lock = parseLock(sections[2])
	return o, nil
}

// setIPs gives each container its kamal network address from the script's
// "ip ID ADDRESS/PREFIX" lines; other lines are ignored.
func setIPs(cs []Container, lines []string) {
	ips := map[string]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "ip" {
			addr, _, _ := strings.Cut(f[2], "/")
			ips[f[1]] = addr
		}
	}
	for i := range cs {
		if ip, ok := ips[cs[i].ID]; ok {
			cs[i].IP = ip
		}
	}
}

// parseLock reads Kamal's lock details file: base64 (Kamal 2), or plain
// text as older writers left it; "" when there is no lock.
func parseLock(b []byte) string {
	lock := strings.TrimSpace(string(b))
	if lock == "" {
		return ""
	}
	if d, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(lock, "\n", "")); err == nil {
		return string(d)
	}
	return lock
}

// hasLabel reports whether Docker's "k=v,k2=v2" label list has key k. A
// value containing a comma can fool the split, so only a key at the start
// or after a comma and followed by "=" counts.
func hasLabel(list, key string) bool {
	for _, kv := range strings.Split(list, ",") {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// Observer observes hosts through a Runner.
type Observer struct {
	Run Runner
}

// Observe runs the observe command on host and parses it.
func (ob Observer) Observe(ctx context.Context, host, lockDir string) (*Observed, error) {
	out, err := ob.Run.Run(ctx, host, ObserveArgv(lockDir), nil)
	if err != nil {
		return nil, fmt.Errorf("observe %s: %w", host, err)
	}
	return ParseObserve(host, out)
}
