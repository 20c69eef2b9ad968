// Package lab brings up a test lab of real Docker hosts on one Linux
// machine: each host is a network namespace with its own address, hostname,
// dockerd and sshd, and private /root, /run, /var/lib/docker and
// /etc/docker. One registry (distribution v3) on the lab bridge serves the
// test images every host pulls.
//
// The design, timings and traps are in shared/docs/lab.md. The lab needs
// root, iproute2, util-linux (unshare, nsenter), iptables, docker.io,
// openssh-server and haproxy; .ci/run installs them.
//
// Tests get the lab through Start; the capstan-lab command runs up, down and
// status. Up is idempotent and shared by every test process (a file lock
// serializes bring-up); down removes everything the lab made, and only that.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults for the lab's network and paths.
const (
	DefaultDir   = "/var/lib/capstan-lab"
	DefaultHosts = 3
	MaxHosts     = 20
	Bridge       = "labbr0"
	Subnet       = "10.231.0"
	GatewayAddr  = Subnet + ".1"
	RegistryPort = 5000
	RegistryAddr = GatewayAddr + ":5000"
	TestAppRepo  = "testapp"
	HAProxyRepo  = "haproxy"
	HAProxyTag   = "lab"
	// KamalProxyRepo:KamalProxyTag is the lab's kamal-proxy stand-in
	// (internal/lab/kamalproxy), under the name Kamal boots.
	KamalProxyRepo = "basecamp/kamal-proxy"
	KamalProxyTag  = "v0.9.2"
	registryModule = "github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
)

// TestAppTags are the tags of the test app pushed to the lab registry. The
// binary is the same in all of them; the image config sets its behaviour:
// v1..v3 are healthy versions, "bad" answers 503 on /up, "slow" becomes
// healthy 5 s after it starts, "crash" exits 2 s after it starts.
var TestAppTags = map[string][]string{
	"v1":    {"APP_VERSION=v1"},
	"v2":    {"APP_VERSION=v2"},
	"v3":    {"APP_VERSION=v3"},
	"bad":   {"APP_VERSION=bad", "APP_FAIL_UP=1"},
	"slow":  {"APP_VERSION=slow", "APP_UP_DELAY=5s"},
	"crash": {"APP_VERSION=crash", "APP_EXIT_AFTER=2s"},
}

// ErrUnavailable means the lab cannot run on this machine (not root, not
// Linux, or a tool is missing). Start turns it into a skip outside CI.
var ErrUnavailable = errors.New("lab unavailable")

// Lab is a running lab.
type Lab struct {
	Dir          string // lab state directory
	Hosts        []Host
	RegistryAddr string // host:port of the registry, reachable from every host
	KnownHosts   string // OpenSSH known_hosts with every host's key (by address, port 22)
	Identity     string // unencrypted ed25519 private key authorized for root on every host
}

// Host is one lab host.
type Host struct {
	Name string // lab1
	Addr string // 10.231.0.11
}

// Image returns the reference of a test app tag in the lab registry.
func (l *Lab) Image(tag string) string { return l.RegistryAddr + "/" + TestAppRepo + ":" + tag }

// HAProxyImage returns the reference of the lab's HAProxy image.
func (l *Lab) HAProxyImage() string { return l.RegistryAddr + "/" + HAProxyRepo + ":" + HAProxyTag }

// Options choose where and how big the lab is.
type Options struct {
	Dir   string // default DefaultDir, or $CAPSTAN_LAB_DIR
	Hosts int    // default DefaultHosts
	// ToolsDir caches built tools (the registry binary); default
	// /var/cache/capstan-lab.
	ToolsDir string
	Logf     func(format string, args ...any)
}

func (o *Options) fill() {
	if o.Dir == "" {
		o.Dir = os.Getenv("CAPSTAN_LAB_DIR")
	}
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.Hosts <= 0 {
		o.Hosts = DefaultHosts
	}
	if o.ToolsDir == "" {
		o.ToolsDir = "/var/cache/capstan-lab"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

func hostName(i int) string { return "lab" + strconv.Itoa(i+1) }
func hostAddr(i int) string { return Subnet + "." + strconv.Itoa(11+i) }

func (l *Lab) hostDir(i int) string { return filepath.Join(l.Dir, "hosts", hostName(i)) }
func (l *Lab) nsDir() string        { return filepath.Join(l.Dir, "ns") }

// nsenterArgs returns the nsenter prefix that enters host i's namespaces.
func (l *Lab) nsenterArgs(i int) []string {
	n := hostName(i)
	return []string{"nsenter",
		"--net=/run/netns/" + n,
		"--mount=" + filepath.Join(l.nsDir(), n+".mnt"),
		"--uts=" + filepath.Join(l.nsDir(), n+".uts"),
		"--"}
}

// Exec runs argv inside host i's namespaces (not over SSH), for test setup
// and inspection. It returns the combined output.
func (l *Lab) Exec(ctx context.Context, i int, argv ...string) (string, error) {
	if i < 0 || i >= len(l.Hosts) {
		return "", fmt.Errorf("lab: no host %d", i)
	}
	args := append(l.nsenterArgs(i), argv...)
	return runOut(ctx, args[0], args[1:]...)
}

// DockerSocket returns the path, valid in the root namespace, of host i's
// Docker API socket.
func (l *Lab) DockerSocket(i int) string {
	return filepath.Join(l.hostDir(i), "run", "docker.sock")
}

// waitTCP waits until addr accepts a TCP connection.
func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reachable after %s: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Describe returns a human summary of the lab for logs and the demo.
func (l *Lab) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lab dir %s, registry %s\n", l.Dir, l.RegistryAddr)
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "  %s %s (ssh root@%s, docker in its own namespace)\n", h.Name, h.Addr, h.Addr)
	}
	fmt.Fprintf(&b, "  known_hosts %s\n  identity    %s\n", l.KnownHosts, l.Identity)
	return b.String()
}

// Reset puts every host back to a fresh state for the next test: its link
// up and sshd running, no containers, no kamal network, no ~/.kamal,
// ~/.capstan or /run/capstan. Pulled images stay (as on a real host) to
// keep tests fast.
func (l *Lab) Reset(ctx context.Context) error {
	for i := range l.Hosts {
		if err := l.SetLink(i, true); err != nil {
			return err
		}
		if err := l.StartSSHD(i); err != nil {
			return err
		}
		if err := l.StartDocker(i); err != nil {
			return err
		}
	}
	script := `ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids >/dev/null
docker network prune -f >/dev/null 2>&1 || true
docker volume prune -f >/dev/null 2>&1 || true
rm -rf /root/.kamal /root/.capstan /run/capstan`
	for i := range l.Hosts {
		if out, err := l.Exec(ctx, i, "sh", "-c", script); err != nil {
			return fmt.Errorf("reset %s: %w: %s", l.Hosts[i].Name, err, out)
		}
	}
	return nil
}
