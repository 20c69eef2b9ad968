package simfleet

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// Stats is what the fleet saw since it started (or since ResetStats).
type Stats struct {
	Connections   int64 // SSH connections accepted (TCP accepts, handshake done or not)
	ConnsMax      int64 // SSH connections open at once, at most
	HandshakesMax int64 // SSH handshakes in progress at once, at most
	SessionsMax   int64 // exec sessions open at once, fleet-wide, at most
	// SessionsPerConnMax is the most exec sessions one connection had open
	// at once (OpenSSH refuses more than MaxSessions).
	SessionsPerConnMax int64
	ChannelsMax        int64 // channels of any kind (sessions, Docker API) open at once, at most
	RefusedSessions    int64 // sessions refused for exceeding MaxSessions
	// Commands counts exec sessions by kind ("observe", "lock",
	// "docker create", "kamal-proxy deploy", …) and Docker API calls by
	// "api METHOD /path-shape".
	Commands map[string]int64
	// Unknown lists the commands the sim did not recognise (answered with
	// exit 127), as "host: command line".
	Unknown []string
	// Switches is the proxy switch log, in order.
	Switches []Switch
	// Observations lists, in order, each observation of a host that named
	// an app's lock directory: the observe script, and the lock read that
	// goes with a Docker API observation on the lock host. One per app
	// and pass on its lock host: when passes and sweeps start.
	Observations []Observation
}

// Observation is one observation of a host for the app whose Kamal lock
// directory is LockDir.
type Observation struct {
	Host    string
	LockDir string
	At      time.Time
}

// Switch is one kamal-proxy deploy that switched a route.
type Switch struct {
	Host   string
	Route  string
	Target string // container ID prefix and port, as capstan sent it
	At     time.Time
}

// Unknowns is len(Unknown).
func (s Stats) Unknowns() int { return len(s.Unknown) }

type counters struct {
	mu                            sync.Mutex
	conns, connsMax               int64
	handshakes, handshakesMax     int64
	sessions, sessionsMax         int64
	channels, channelsMax         int64
	accepted, refused, perConnMax int64
	commands                      map[string]int64
	unknown                       []string
	switches                      []Switch
	observations                  []Observation
}

func (c *counters) init() { c.commands = map[string]int64{} }

// gauge adds delta to *n and raises *max to it.
func (c *counters) gauge(n, max *int64, delta int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*n += delta
	if *n > *max {
		*max = *n
	}
}

func (c *counters) count(kind string) {
	c.mu.Lock()
	c.commands[kind]++
	c.mu.Unlock()
}

func (c *counters) add(p *int64, delta int64) {
	c.mu.Lock()
	*p += delta
	c.mu.Unlock()
}

func (c *counters) perConn(n int64) {
	c.mu.Lock()
	c.perConnMax = max(c.perConnMax, n)
	c.mu.Unlock()
}

func (c *counters) unknownCmd(s string) {
	c.mu.Lock()
	c.unknown = append(c.unknown, s)
	c.commands["unknown"]++
	c.mu.Unlock()
}

func (c *counters) observed(o Observation) {
	c.mu.Lock()
	c.observations = append(c.observations, o)
	c.mu.Unlock()
}

func (c *counters) switched(s Switch) {
	c.mu.Lock()
	c.switches = append(c.switches, s)
	c.mu.Unlock()
}

// Stats returns a copy of the fleet's counters.
func (f *Fleet) Stats() Stats {
	c := &f.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Connections: c.accepted, ConnsMax: c.connsMax, HandshakesMax: c.handshakesMax,
		SessionsMax: c.sessionsMax, SessionsPerConnMax: c.perConnMax, ChannelsMax: c.channelsMax,
		RefusedSessions: c.refused, Commands: maps.Clone(c.commands),
		Unknown: slices.Clone(c.unknown), Switches: slices.Clone(c.switches),
		Observations: slices.Clone(c.observations)}
}

// ResetStats zeroes the counters and maxima (gauges keep their current
// values as the new maxima), e.g. between a deploy and a no-op pass.
func (f *Fleet) ResetStats() {
	c := &f.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connsMax, c.handshakesMax, c.sessionsMax, c.channelsMax = c.conns, c.handshakes, c.sessions, c.channels
	c.accepted, c.refused, c.perConnMax = 0, 0, 0
	c.commands, c.unknown, c.switches, c.observations = map[string]int64{}, nil, nil, nil
}
