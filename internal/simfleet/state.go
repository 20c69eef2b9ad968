package simfleet

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"
)

// Home is the SSH user's home directory on every simulated host.
const Home = "/root"

// dockerSocket is where the simulated Docker API listens.
const dockerSocket = "/var/run/docker.sock"

// Container is a container on a simulated host.
type Container struct {
	ID        string
	Name      string
	Image     string
	Labels    map[string]string
	State     string // created, running, exited
	Health    string // "" without a health check, else starting or healthy
	Created   time.Time
	StartedAt time.Time
	Networks  []string
	IP        string // on the kamal network ("" when not on it)
	ExitCode  int
	Args      []string // the docker create/run argv
}

// Route is a kamal-proxy route on a simulated host.
type Route struct {
	Name         string
	Target       string // container ID prefix:port, as deployed
	Hosts        []string
	PathPrefixes []string
	TLS          bool
}

type image struct {
	ref, id, digest string
	labels          map[string]string
}

type hostState struct {
	execs      map[string]*apiExec // created through the API, not yet inspected
	containers []*Container        // in creation order
	images     map[string]*image
	networks   map[string]string // name -> ID
	routes     map[string]*Route
	files      map[string]string // absolute path -> content
	dirs       map[string]bool
	nextIP     int
	haproxy    *haproxyState // nil until the haproxy driver's boot script ran
}

func (s *hostState) init() {
	s.images, s.networks, s.routes = map[string]*image{}, map[string]string{}, map[string]*Route{}
	s.files, s.dirs = map[string]string{}, map[string]bool{Home: true, "/": true}
}

// abs resolves p against the home directory (every command runs there).
func abs(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = Home + "/" + p
	}
	return path.Clean(p)
}

// hashHex is the hex SHA-256 of s: an image's ID and digest, stable per
// reference.
func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// container finds a container by name, full ID or ID prefix (at least 4
// characters); nil when none.
func (s *hostState) container(ref string) *Container {
	ref = strings.TrimPrefix(ref, "/")
	for _, c := range s.containers {
		if c.Name == ref || c.ID == ref {
			return c
		}
	}
	if len(ref) >= 4 {
		for _, c := range s.containers {
			if strings.HasPrefix(c.ID, ref) {
				return c
			}
		}
	}
	return nil
}

func (s *hostState) remove(c *Container) {
	s.containers = slices.DeleteFunc(s.containers, func(x *Container) bool { return x == c })
}

// image finds a local image by reference or ID.
func (s *hostState) image(ref string) *image {
	if im := s.images[ref]; im != nil {
		return im
	}
	if !strings.Contains(ref, ":") {
		if im := s.images[ref+":latest"]; im != nil {
			return im
		}
	}
	for _, im := range s.images {
		if im.id == ref || strings.TrimPrefix(im.id, "sha256:") == ref {
			return im
		}
	}
	return nil
}

// pulled makes ref a local image, as a pull from the registry would.
func (f *Fleet) pulled(s *hostState, ref string) *image {
	if im := s.image(ref); im != nil {
		return im
	}
	if !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") && !strings.Contains(ref, "@") {
		ref += ":latest"
	}
	sum := hashHex(ref)
	repo, _ := splitRef(ref)
	labels := map[string]string{}
	if base := repoBase(ref); base == "kamal-proxy" {
		labels["org.opencontainers.image.title"] = base
	} else {
		labels["service"] = f.opts.ServiceOf(ref)
	}
	im := &image{ref: ref, id: "sha256:" + sum, digest: repo + "@sha256:" + sum, labels: labels}
	s.images[ref] = im
	return im
}

// create makes a container from a docker create/run argv (after the
// subcommand). It returns an error text as the docker CLI prints it.
func (f *Fleet) create(s *hostState, args []string) (*Container, string) {
	o := parseRunFlags(args)
	if o.image == "" {
		return nil, "\"docker create\" requires at least 1 argument."
	}
	if o.name != "" && s.container(o.name) != nil && s.container(o.name).Name == o.name {
		return nil, fmt.Sprintf("Error response from daemon: Conflict. The container name \"/%s\" is already in use.", o.name)
	}
	im := f.pulled(s, o.image)
	c := &Container{ID: randomID(), Name: o.name, Image: o.image, Labels: maps.Clone(im.labels), State: "created",
		Created: time.Now(), Args: slices.Clone(args)}
	if c.Name == "" {
		c.Name = "sim_" + c.ID[:8]
	}
	maps.Copy(c.Labels, o.labels)
	if o.health {
		c.Health = "starting"
	}
	if o.network != "" {
		if _, ok := s.networks[o.network]; !ok {
			return nil, fmt.Sprintf("Error response from daemon: network %s not found", o.network)
		}
		s.connect(c, o.network)
	}
	s.containers = append(s.containers, c)
	return c, ""
}

func (s *hostState) connect(c *Container, network string) {
	if slices.Contains(c.Networks, network) {
		return
	}
	c.Networks = append(c.Networks, network)
	slices.Sort(c.Networks)
	if network == "kamal" {
		s.nextIP++
		c.IP = fmt.Sprintf("172.18.%d.%d", s.nextIP/250, s.nextIP%250+2)
	}
}

func (c *Container) start() {
	c.State, c.StartedAt, c.ExitCode = "running", time.Now(), 0
	if c.Health != "" {
		c.Health = "healthy"
	}
}

func (c *Container) stop() {
	if c.State == "running" {
		c.State, c.ExitCode = "exited", 0
	}
	if c.Health != "" {
		c.Health = "starting"
	}
}

// status is Docker's status text: "Up 3 seconds (healthy)", "Exited (0)
// 2 seconds ago", "Created".
func (c *Container) status() string {
	switch c.State {
	case "running":
		s := "Up " + humanSince(c.StartedAt)
		switch c.Health {
		case "healthy":
			s += " (healthy)"
		case "starting":
			s += " (health: starting)"
		}
		return s
	case "exited":
		return fmt.Sprintf("Exited (%d) %s ago", c.ExitCode, humanSince(c.StartedAt))
	}
	return "Created"
}

func humanSince(t time.Time) string {
	d := time.Since(t)
	if d < time.Minute {
		return fmt.Sprintf("%d seconds", max(int(d.Seconds()), 1))
	}
	return fmt.Sprintf("%d minutes", int(d.Minutes()))
}

func (c *Container) labelList() string {
	keys := slices.Sorted(maps.Keys(c.Labels))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + c.Labels[k]
	}
	return strings.Join(parts, ",")
}

// mkdirAll records p and its parents as directories.
func (s *hostState) mkdirAll(p string) {
	for p = abs(p); p != "/"; p = path.Dir(p) {
		s.dirs[p] = true
	}
}

// Containers returns copies of the host's containers, in creation order.
func (h *Host) Containers() []Container {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Container, len(h.state.containers))
	for i, c := range h.state.containers {
		out[i] = *c
		out[i].Labels = maps.Clone(c.Labels)
		out[i].Networks = slices.Clone(c.Networks)
	}
	return out
}

// Routes returns the host's kamal-proxy routes by name.
func (h *Host) Routes() map[string]Route {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]Route{}
	for k, r := range h.state.routes {
		out[k] = *r
	}
	return out
}

// File returns the content of a file written on the host (a path relative
// to Home or absolute) and whether it exists.
func (h *Host) File(p string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.state.files[abs(p)]
	return s, ok
}

// Dir reports whether a directory exists on the host.
func (h *Host) Dir(p string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.dirs[abs(p)]
}

// Networks returns the host's Docker networks.
func (h *Host) Networks() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.state.networks))
}
