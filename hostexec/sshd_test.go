package hostexec

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/testport"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const sshdPath = "/usr/sbin/sshd"

// skipOrFail skips the test with reason, except when CI=true, where a
// skipped e2e test is a failure (STYLE.md, practice 18).
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this test cannot run: %s", reason)
	}
	t.Skip(reason)
}

// requireSSHD skips (or fails under CI) when a real sshd cannot be run here.
func requireSSHD(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to run a real sshd that accepts root logins")
	}
	if _, err := os.Stat(sshdPath); err != nil {
		skipOrFail(t, "needs OpenSSH server at "+sshdPath+" (apt-get install openssh-server)")
	}
}

// keyPair is an ed25519 key in the forms the tests need.
type keyPair struct {
	signer ssh.Signer
	pub    ssh.PublicKey
	pem    []byte // OpenSSH private key, unencrypted
}

func newKeyPair(t testing.TB) keyPair {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sg, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{signer: sg, pub: sg.PublicKey(), pem: pem.EncodeToMemory(blk)}
}

func (k keyPair) encrypted(t testing.TB, passphrase string) []byte {
	t.Helper()
	raw, err := ssh.ParseRawPrivateKey(k.pem)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKeyWithPassphrase(raw, "", []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(blk)
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// testSSHD is a real OpenSSH sshd on a random loopback port, run as a child
// of the test. Its host key, the client key and a known_hosts file with
// its key live in a temp dir.
type testSSHD struct {
	t          testing.TB
	Dir        string
	Port       int
	HostKey    keyPair
	Client     keyPair
	Identity   string // client private key file
	KnownHosts string // known_hosts with the host key for [127.0.0.1]:Port
	config     string

	mu     sync.Mutex
	cmd    *exec.Cmd
	stderr syncBuffer // sshd's log
}

type sshdOption func(dir string, cfg *strings.Builder)

// withHostCert gives sshd a host certificate signed by ca.
func withHostCert(ca keyPair, hostKey *keyPair, principals ...string) sshdOption {
	return func(dir string, cfg *strings.Builder) {
		cert := &ssh.Certificate{
			Key:             hostKey.pub,
			CertType:        ssh.HostCert,
			KeyId:           "test-host",
			ValidPrincipals: principals,
			ValidBefore:     ssh.CertTimeInfinity,
		}
		if err := cert.SignCert(rand.Reader, ca.signer); err != nil {
			panic(err)
		}
		f := filepath.Join(dir, "host_ed25519-cert.pub")
		if err := os.WriteFile(f, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
			panic(err)
		}
		fmt.Fprintf(cfg, "HostCertificate %s\n", f)
	}
}

func freePort(t testing.TB) int { return testport.Free(t) }

func startSSHD(t testing.TB, opts ...sshdOption) *testSSHD {
	t.Helper()
	requireSSHD(t)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &testSSHD{t: t, Dir: dir, Port: freePort(t), HostKey: newKeyPair(t), Client: newKeyPair(t)}
	hostKeyFile := writeFile(t, filepath.Join(dir, "host_ed25519"), s.HostKey.pem, 0o600)
	writeFile(t, filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(s.Client.pub), 0o600)
	s.Identity = writeFile(t, filepath.Join(dir, "id_ed25519"), s.Client.pem, 0o600)
	s.KnownHosts = writeFile(t, filepath.Join(dir, "known_hosts"),
		[]byte(knownhosts.Line([]string{s.HostPort()}, s.HostKey.pub)+"\n"), 0o600)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
StrictModes no
PidFile %s
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
MaxStartups 200
LogLevel %s
`, s.Port, hostKeyFile, filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"),
		cmpOr(os.Getenv("CAPSTAN_TEST_SSHD_LOGLEVEL"), "ERROR"))
	for _, o := range opts {
		o(dir, &cfg)
	}
	s.config = writeFile(t, filepath.Join(dir, "sshd_config"), []byte(cfg.String()), 0o600)
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// HostPort is the address in known_hosts form: [127.0.0.1]:port.
func (s *testSSHD) HostPort() string {
	return knownhosts.Normalize(net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
}

// Host is the target for a Pool.
func (s *testSSHD) Host() Host { return Host{Addr: "127.0.0.1", Port: s.Port, User: "root"} }

// Config is a strict Config that trusts this sshd and uses its client key.
func (s *testSSHD) Config() Config {
	return Config{KnownHosts: []string{s.KnownHosts}, Keys: []string{s.Identity}, Home: s.Dir}
}

// Start runs sshd (in its own process group) and waits until it accepts
// connections.
func (s *testSSHD) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	// A private mount namespace with an empty /root: the machine's root
	// dotfiles (which may run slow shell init for every session) stay out
	// of the way, as on a real host. /tmp and the rest are shared.
	root := filepath.Join(s.Dir, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		s.t.Fatal(err)
	}
	// Its own PID namespace too: killing unshare (--kill-child) kills the
	// namespace's init, sshd, and with it every per-connection child, the
	// way a host's sshd dies with its sessions.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
		"sh", "-c", `mount --bind "$1" /root && exec "$2" -D -e -f "$3"`, "sh", root, sshdPath, s.config)
	stderr := &s.stderr
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			s.t.Fatalf("sshd exited: %s", stderr.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sshd did not listen on %d: %v; %s", s.Port, err, stderr.Bytes())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd = cmd
}

// Stop kills sshd's process group (the listener and its per-connection
// children), cutting every connection.
func (s *testSSHD) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	s.cmd.Process.Wait()
	if testing.Verbose() && len(s.stderr.Bytes()) > 0 {
		s.t.Logf("sshd log:\n%s", s.stderr.Bytes())
	}
	s.cmd = nil
}

// established counts established TCP connections to this sshd.
func (s *testSSHD) established(t testing.TB) int {
	t.Helper()
	out, err := exec.Command("ss", "-tnH", "state", "established", fmt.Sprintf("( sport = :%d )", s.Port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return countLines(string(out))
}

func countLines(s string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
