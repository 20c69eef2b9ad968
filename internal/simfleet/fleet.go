// Package simfleet serves a fleet of simulated SSH hosts from one process,
// for scale tests of capstan. Each host listens on its own loopback
// address (127.77.X.Y, all on one port: Linux routes 127.0.0.0/8 to lo),
// has its own ed25519 host key, accepts one user key the fleet generates,
// and answers what capstan sends a real host: the docker CLI commands and
// shell scripts it runs as exec sessions, the Docker Engine API over the
// direct-streamlocal channel, kamal-proxy's CLI, HAProxy (its boot
// script, reloads, runtime API on the admin socket, and health probes of
// new targets over direct-tcpip), the deploy lock, env files and the
// audit log. A plain-HTTP registry on 127.0.0.1 (Registry) resolves tags
// to the digests the hosts pull. It keeps a small model of each host
// (containers, images, networks, proxy routes, files) and sleeps the
// configured latency for each operation.
//
// Usage: Start(t, Options{Hosts: n}); deploy.yml lists Hosts() with
// ssh.port Port() and the registry Registry(); capstan runs with
// CAPSTAN_KNOWN_HOSTS=KnownHosts(), CAPSTAN_IDENTITY=UserKey() and
// CAPSTAN_INSECURE_REGISTRIES=Registry(). Host(i) sets faults and shows
// state; Stats() shows what the fleet saw.
//
// A command the sim does not recognise is answered with exit 127 and
// recorded in Stats.Unknown, so tests can assert capstan sent nothing the
// sim does not model: the sim stays honest as capstan evolves.
//
// The sim imports nothing of capstan's: it recognises commands by their
// argv and script text, as a real host would run them.
package simfleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// MaxSessions is how many sessions one SSH connection may have open at
// once, as OpenSSH's default MaxSessions: the sim refuses more, as sshd
// does.
const MaxSessions = 10

// Latency is how long the simulated hosts take. Every duration is scaled
// by a host's slow factor. Zero values take no time.
type Latency struct {
	RTT       time.Duration // each channel open, command and API request
	Handshake time.Duration // each SSH connection's key exchange and auth
	Exec      time.Duration // each exec session (shell and docker CLI start)
	Create    time.Duration // docker create
	Start     time.Duration // docker start
	Stop      time.Duration // docker stop
	PullPerMB time.Duration // docker pull, per MB of image
	Switch    time.Duration // kamal-proxy deploy (health check of the new target)
}

// TestLatency is the default: small values, so tests are quick but the
// operations still overlap as they would on real hosts.
var TestLatency = Latency{RTT: 200 * time.Microsecond, Handshake: time.Millisecond, Exec: time.Millisecond,
	Create: 2 * time.Millisecond, Start: 5 * time.Millisecond, Stop: 2 * time.Millisecond,
	PullPerMB: 50 * time.Microsecond, Switch: 5 * time.Millisecond}

// RealisticLatency is what a small VM in the same region as capstan
// shows: a few ms of round trip, a docker CLI start of ~40 ms, a
// container start of 700 ms, a 10 s graceful stop made short by a
// well-behaved app.
var RealisticLatency = Latency{RTT: 2 * time.Millisecond, Handshake: 15 * time.Millisecond, Exec: 40 * time.Millisecond,
	Create: 80 * time.Millisecond, Start: 700 * time.Millisecond, Stop: 300 * time.Millisecond,
	PullPerMB: 10 * time.Millisecond, Switch: time.Second}

// Options configure a fleet. The zero value is one host with TestLatency.
type Options struct {
	Hosts   int      // number of hosts; 0 = 1
	Port    int      // the port every host listens on; 0 = one free on every host's address
	Latency *Latency // nil = TestLatency
	// ImageMB is the size of every image, for PullPerMB; 0 = 100.
	ImageMB int
	// ServiceOf returns the "service" label of the image ref (Kamal builds
	// images with it); nil = the repository's last path element.
	ServiceOf func(ref string) string
}

// Fleet is a running set of simulated hosts. Close (or the test's
// cleanup) stops it.
type Fleet struct {
	opts     Options
	port     int
	registry string
	lat      Latency
	dir      string
	known    string
	userKey  string
	userPub  ssh.PublicKey
	hosts    []*Host
	stats    counters
	closeOne sync.Once
	wg       sync.WaitGroup
	done     chan struct{}
}

// Start starts a fleet and stops it when t ends; it fails t on error.
func Start(t testing.TB, o Options) *Fleet {
	t.Helper()
	f, err := New(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// New starts a fleet whose key and known_hosts files live in dir.
func New(o Options, dir string) (*Fleet, error) {
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.Hosts > 250*250 {
		return nil, fmt.Errorf("simfleet: %d hosts is more than the address plan holds", o.Hosts)
	}
	if o.ImageMB == 0 {
		o.ImageMB = 100
	}
	if o.ServiceOf == nil {
		o.ServiceOf = repoBase
	}
	f := &Fleet{opts: o, lat: TestLatency, dir: dir, done: make(chan struct{})}
	if o.Latency != nil {
		f.lat = *o.Latency
	}
	f.stats.init()
	if err := f.writeUserKey(); err != nil {
		return nil, err
	}
	for i := 0; i < o.Hosts; i++ {
		h, err := newHost(f, i)
		if err != nil {
			return nil, err
		}
		f.hosts = append(f.hosts, h)
	}
	if err := f.listenAll(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.startRegistry(); err != nil {
		f.Close()
		return nil, err
	}
	var known strings.Builder
	for _, h := range f.hosts {
		fmt.Fprintf(&known, "[%s]:%d %s", h.addr, f.port, ssh.MarshalAuthorizedKey(h.signer.PublicKey()))
	}
	f.known = filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(f.known, []byte(known.String()), 0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// listenAll makes every host listen on the same port: Options.Port, or
// when 0 a port free on every host's address (fleets of several tests,
// or several test processes, share 127.77.0.0/16).
func (f *Fleet) listenAll() error {
	var err error
	for try := 0; try < 50; try++ {
		port := f.opts.Port
		if port == 0 {
			ln, lerr := net.Listen("tcp", net.JoinHostPort(f.hosts[0].addr, "0"))
			if lerr != nil {
				return fmt.Errorf("simfleet: %w", lerr)
			}
			port = ln.Addr().(*net.TCPAddr).Port
			ln.Close()
		}
		f.port = port
		err = nil
		for _, h := range f.hosts {
			if err = h.listen(); err != nil {
				break
			}
		}
		if err == nil || f.opts.Port != 0 {
			return err
		}
		for _, h := range f.hosts {
			h.closeListener()
		}
	}
	return err
}

func (f *Fleet) writeUserKey() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	f.userPub = signer.PublicKey()
	f.userKey = filepath.Join(f.dir, "id_ed25519")
	return os.WriteFile(f.userKey, pem.EncodeToMemory(blk), 0o600)
}

// hostAddr is the loopback address of host i: 127.77.X.Y with X, Y in
// 1..250.
func hostAddr(i int) string { return fmt.Sprintf("127.77.%d.%d", i/250+1, i%250+1) }

// Hosts returns the hosts' addresses (plain IPs, for deploy.yml).
func (f *Fleet) Hosts() []string {
	out := make([]string, len(f.hosts))
	for i, h := range f.hosts {
		out[i] = h.addr
	}
	return out
}

// Port is the SSH port every host listens on (deploy.yml's ssh.port).
func (f *Fleet) Port() int { return f.port }

// DeployYML is a stock deploy.yml for service (its image of the same name,
// from the fleet's registry) with one web role on hosts, routed by
// kamal-proxy, at version: root holds more top-level keys, capstan more
// x-capstan keys (each line indented).
func (f *Fleet) DeployYML(service string, hosts []string, version, root, capstan string) string {
	return fmt.Sprintf(`service: %s
image: %s
servers:
  web:
    hosts: [%s]
proxy:
  app_port: 3000
  healthcheck:
    path: /up
registry:
  server: %s
  username: sim
  password: [REGISTRY_PASSWORD]
builder:
  arch: amd64
ssh:
  port: %d
%sx-capstan:
  version: %s
%s`, service, service, strings.Join(hosts, ", "), f.Registry(), f.Port(), root, version, capstan)
}

// KnownHosts is the path of a known_hosts file (OpenSSH format, with
// [ip]:port entries) holding every host's key.
func (f *Fleet) KnownHosts() string { return f.known }

// UserKey is the path of the private key every host accepts (any user
// name; the sim's home is /root).
func (f *Fleet) UserKey() string { return f.userKey }

// Host returns host i (0-based), for faults and state.
func (f *Fleet) Host(i int) *Host { return f.hosts[i] }

// Close stops every host and cuts every connection. It is safe to call
// more than once.
func (f *Fleet) Close() {
	f.closeOne.Do(func() {
		close(f.done)
		for _, h := range f.hosts {
			h.shutdown()
		}
		f.wg.Wait()
	})
}

// repoBase is the last path element of ref's repository: the default
// "service" label of an image.
func repoBase(ref string) string {
	repo, _ := splitRef(ref)
	return repo[strings.LastIndex(repo, "/")+1:]
}

// splitRef splits an image reference into repository and tag (or digest);
// the tag is "latest" when there is none.
func splitRef(ref string) (repo, tag string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

// sleep waits d (unless the fleet closes first).
func (f *Fleet) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-f.done:
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func (f *Fleet) listenAddr(h *Host) string {
	return net.JoinHostPort(h.addr, strconv.Itoa(f.port))
}
