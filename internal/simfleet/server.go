package simfleet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Fault is what is wrong with a host's network.
type Fault int

const (
	// Healthy hosts accept connections.
	Healthy Fault = iota
	// Refuse closes the host's listener: connections are refused.
	Refuse
	// Blackhole accepts TCP connections and never answers on them.
	Blackhole
	// Flapping accepts every other connection (the others are cut before
	// the handshake), and cuts an accepted connection after a few sessions.
	Flapping
)

// flapSessions is how many sessions a flapping host's connection serves
// before it is cut.
const flapSessions = 3

// Host is one simulated host: its SSH server, faults and state.
type Host struct {
	f      *Fleet
	index  int
	addr   string
	signer ssh.Signer

	netMu   sync.Mutex
	ln      net.Listener
	fault   Fault
	flapN   int
	slow    float64
	latOver *Latency // SetLatency's; nil = the fleet's
	conns   map[net.Conn]bool
	stopped bool

	mu    sync.Mutex // guards the state below (see state.go)
	state hostState
}

func newHost(f *Fleet, i int) (*Host, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	h := &Host{f: f, index: i, addr: hostAddr(i), signer: signer, slow: 1, conns: map[net.Conn]bool{}}
	h.state.init()
	return h, nil
}

// Addr is the host's IP address.
func (h *Host) Addr() string { return h.addr }

// SetSlow multiplies every latency of this host by factor (1 = normal).
func (h *Host) SetSlow(factor float64) {
	h.netMu.Lock()
	h.slow = factor
	h.netMu.Unlock()
}

// SetLatency gives this host its own latency instead of the fleet's
// (still scaled by SetSlow).
func (h *Host) SetLatency(l Latency) {
	h.netMu.Lock()
	h.latOver = &l
	h.netMu.Unlock()
}

// latency is the host's Latency.
func (h *Host) latency() Latency {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	if h.latOver != nil {
		return *h.latOver
	}
	return h.f.lat
}

// SetFault puts the host in fault mode m. Refuse and Blackhole cut the
// host's open connections; Healthy listens again.
func (h *Host) SetFault(m Fault) error {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	h.fault = m
	if m == Refuse || m == Blackhole {
		for c := range h.conns {
			c.Close()
		}
	}
	if m == Refuse && h.ln != nil {
		h.ln.Close()
		h.ln = nil
		return nil
	}
	if m != Refuse && h.ln == nil && !h.stopped {
		return h.listenLocked()
	}
	return nil
}

// lat is d scaled by the host's slow factor.
func (h *Host) lat(d time.Duration) time.Duration {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	return time.Duration(float64(d) * h.slow)
}

// wait sleeps d scaled by the host's slow factor.
func (h *Host) wait(d time.Duration) { h.f.sleep(h.lat(d)) }

func (h *Host) listen() error {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	return h.listenLocked()
}

func (h *Host) listenLocked() error {
	ln, err := net.Listen("tcp", h.f.listenAddr(h))
	if err != nil {
		return fmt.Errorf("simfleet: host %d: %w", h.index, err)
	}
	h.ln = ln
	h.f.wg.Add(1)
	go h.accept(ln)
	return nil
}

func (h *Host) closeListener() {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	if h.ln != nil {
		h.ln.Close()
		h.ln = nil
	}
}

func (h *Host) shutdown() {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	h.stopped = true
	if h.ln != nil {
		h.ln.Close()
		h.ln = nil
	}
	for c := range h.conns {
		c.Close()
	}
}

func (h *Host) accept(ln net.Listener) {
	defer h.f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.netMu.Lock()
		fault := h.fault
		if fault == Flapping {
			h.flapN++
			if h.flapN%2 == 0 {
				fault = Refuse
			}
		}
		if h.stopped || fault == Refuse {
			h.netMu.Unlock()
			c.Close()
			continue
		}
		h.conns[c] = true
		h.netMu.Unlock()
		h.f.stats.add(&h.f.stats.accepted, 1)
		h.f.wg.Add(1)
		go func() {
			defer h.f.wg.Done()
			defer h.forget(c)
			if fault == Blackhole {
				io.Copy(io.Discard, c) // until the fault is lifted or the fleet closes
				return
			}
			h.serve(c, fault == Flapping)
		}()
	}
}

func (h *Host) forget(c net.Conn) {
	c.Close()
	h.netMu.Lock()
	delete(h.conns, c)
	h.netMu.Unlock()
}

func (h *Host) serverConfig() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), h.f.userPub.Marshal()) {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("simfleet: unknown key")
		},
	}
	cfg.AddHostKey(h.signer)
	return cfg
}

func (h *Host) serve(c net.Conn, flapping bool) {
	st := &h.f.stats
	st.gauge(&st.handshakes, &st.handshakesMax, 1)
	h.wait(h.latency().Handshake)
	sc, chans, reqs, err := ssh.NewServerConn(c, h.serverConfig())
	st.gauge(&st.handshakes, &st.handshakesMax, -1)
	if err != nil {
		return
	}
	defer sc.Close()
	st.gauge(&st.conns, &st.connsMax, 1)
	defer st.gauge(&st.conns, &st.connsMax, -1)
	go ssh.DiscardRequests(reqs) // keepalives are answered false, as OpenSSH does for unknown global requests
	var sessions atomic.Int64
	var served atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			n := sessions.Add(1)
			if n > MaxSessions {
				sessions.Add(-1)
				st.add(&st.refused, 1)
				nc.Reject(ssh.ResourceShortage, "no more sessions")
				continue
			}
			st.perConn(n)
			if flapping && served.Add(1) > flapSessions {
				sc.Close()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer sessions.Add(-1)
				h.channel(nc, func(ch ssh.Channel, reqs <-chan *ssh.Request) { h.session(ch, reqs) }, true)
			}()
		case "direct-streamlocal@openssh.com":
			var p struct {
				Path      string
				Reserved0 string
				Reserved1 uint32
			}
			err := ssh.Unmarshal(nc.ExtraData(), &p)
			var serve func(io.ReadWriter)
			switch {
			case err == nil && p.Path == dockerSocket:
				serve = h.serveAPI
			case err == nil && h.haproxySocket(p.Path):
				serve = h.serveRuntimeAPI
			default:
				// Nothing listens there (HAProxy not booted yet, or a
				// socket the sim does not model): refused as on a host.
				st.count("streamlocal refused " + p.Path)
				nc.Reject(ssh.ConnectionFailed, "connect failed: No such file or directory")
				continue
			}
			h.stream(&wg, nc, serve)
		case "direct-tcpip":
			var p struct {
				Host     string
				Port     uint32
				OrigHost string
				OrigPort uint32
			}
			if ssh.Unmarshal(nc.ExtraData(), &p) != nil {
				nc.Reject(ssh.ConnectionFailed, "bad request")
				continue
			}
			// Only the health probe of a container on the kamal network
			// is modelled; anything else finds no listener.
			ip, err := netip.ParseAddr(p.Host)
			if err != nil || !h.serving(ip.String()) {
				nc.Reject(ssh.ConnectionFailed, "connect failed: Connection refused")
				continue
			}
			addr := netip.AddrPortFrom(ip, uint16(p.Port))
			h.stream(&wg, nc, func(rw io.ReadWriter) { h.probeTarget(rw, addr) })
		default:
			st.unknownCmd(h.addr + ": channel " + nc.ChannelType())
			nc.Reject(ssh.UnknownChannelType, "unsupported channel type")
		}
	}
}

// stream serves a forwarded channel (not a session) with serve.
func (h *Host) stream(wg *sync.WaitGroup, nc ssh.NewChannel, serve func(io.ReadWriter)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.channel(nc, func(ch ssh.Channel, reqs <-chan *ssh.Request) {
			go ssh.DiscardRequests(reqs)
			serve(ch)
		}, false)
	}()
}

// channel accepts nc after a round trip and runs serve on it, keeping the
// gauges.
func (h *Host) channel(nc ssh.NewChannel, serve func(ssh.Channel, <-chan *ssh.Request), session bool) {
	st := &h.f.stats
	h.wait(h.latency().RTT)
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	st.gauge(&st.channels, &st.channelsMax, 1)
	defer st.gauge(&st.channels, &st.channelsMax, -1)
	if session {
		st.gauge(&st.sessions, &st.sessionsMax, 1)
		defer st.gauge(&st.sessions, &st.sessionsMax, -1)
	}
	serve(ch, reqs)
}

// session serves one session channel: it waits for an exec request (env,
// pty and signal requests are accepted and ignored), runs the command and
// sends its exit status.
func (h *Host) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			code := h.exec(p.Command, ch, ch, ch.Stderr())
			ch.CloseWrite()
			var status [4]byte
			binary.BigEndian.PutUint32(status[:], uint32(code))
			ch.SendRequest("exit-status", false, status[:])
			return
		case "env", "pty-req", "window-change", "signal":
			req.Reply(true, nil)
		default:
			req.Reply(false, nil)
		}
	}
}
