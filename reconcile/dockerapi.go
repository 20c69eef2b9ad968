package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// DockerSocket is where observeAPI reaches the Docker Engine API on a host.
const DockerSocket = "/var/run/docker.sock"

// apiObserver reads containers straight from each host's Docker Engine API
// over an SSH unix-socket channel that stays open between passes: no
// process starts on the host, so a no-op check costs one request. It is a
// fast path only; the observe script remains the reference (and the only
// way for hosts whose socket the SSH user cannot open).
type apiObserver struct {
	once    sync.Once
	dial    Dialer
	mu      sync.Mutex
	clients map[string]*http.Client
	broken  map[string]bool // hosts where the API path failed: use the script
}

func (o *apiObserver) client(host string) *http.Client {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.clients == nil {
		o.clients = map[string]*http.Client{}
	}
	c := o.clients[host]
	if c == nil {
		c = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return o.dial.Dial(ctx, host, "unix", DockerSocket)
			},
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     5 * time.Minute,
		}}
		o.clients[host] = c
	}
	return c
}

func (o *apiObserver) usable(host string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dial != nil && !o.broken[host]
}

func (o *apiObserver) markBroken(host string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.broken == nil {
		o.broken = map[string]bool{}
	}
	o.broken[host] = true
}

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

// containers lists every container of host through the Docker API, newest
// first, in the shape the observe script produces.
func (o *apiObserver) containers(ctx context.Context, host string) ([]Container, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/json?all=1", nil)
	if err != nil {
		return nil, err
	}
	resp, err := o.client(host).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("docker API: %s", resp.Status)
	}
	var list []apiContainer
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%w: docker API: %v", ErrObserve, err)
	}
	out := make([]Container, 0, len(list))
	for _, a := range list {
		c := Container{ID: a.ID, Image: a.Image, State: a.State, Status: a.Status, Created: time.Unix(a.Created, 0).UTC(),
			Service: a.Labels[LabelService], Role: a.Labels[LabelRole], Destination: a.Labels[LabelDestination],
			Fingerprint: a.Labels[LabelFingerprint], ImageTitle: a.Labels[LabelImageTitle]}
		_, c.HasDest = a.Labels[LabelDestination]
		if len(a.Names) > 0 {
			c.Name = strings.TrimPrefix(a.Names[0], "/")
		}
		for n := range a.Network.Networks {
			c.Networks = append(c.Networks, n)
		}
		sort.Strings(c.Networks)
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}
