package hostexec

import (
	"sync/atomic"
)

// HostStats are the counters of one host since the Pool was created.
type HostStats struct {
	Commands     uint64 // commands started (Run, Stream, Upload)
	Failures     uint64 // commands that did not exit 0 (exit code, lost connection, cancel)
	BytesIn      uint64 // stdout + stderr bytes received
	BytesOut     uint64 // stdin bytes sent
	Dials        uint64 // connection attempts
	DialFailures uint64 // failed connection attempts
}

type counters struct {
	commands, failures, bytesIn, bytesOut, dials, dialFailures atomic.Uint64
}

func (p *Pool) counter(h Host) *counters {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := h.String()
	c := p.counters[k]
	if c == nil {
		c = &counters{}
		p.counters[k] = c
	}
	return c
}

// Stats returns a snapshot of the per-host counters, keyed by the resolved
// host's String() ("root@10.0.0.1:22"). The map is the caller's.
func (p *Pool) Stats() map[string]HostStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]HostStats, len(p.counters))
	for k, c := range p.counters {
		out[k] = HostStats{
			Commands:     c.commands.Load(),
			Failures:     c.failures.Load(),
			BytesIn:      c.bytesIn.Load(),
			BytesOut:     c.bytesOut.Load(),
			Dials:        c.dials.Load(),
			DialFailures: c.dialFailures.Load(),
		}
	}
	return out
}
