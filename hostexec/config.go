package hostexec

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/internal/redact"
)

// Defaults, as in Kamal and OpenSSH.
const (
	// DefaultMaxDials bounds concurrent connection setups across all hosts
	// (Kamal's sshkit max_concurrent_starts).
	DefaultMaxDials = 30
	// DefaultConnectTimeout bounds one connection setup (TCP connect, SSH
	// handshake and authentication, through the jump hosts if any) when
	// the ctx has no earlier deadline (capstan.yml ssh.connect_timeout).
	DefaultConnectTimeout = 10 * time.Second
	// DefaultKeepaliveInterval is the interval of keepalive@openssh.com
	// requests on idle and busy connections (OpenSSH ServerAliveInterval).
	DefaultKeepaliveInterval = 5 * time.Second
	// DefaultKeepaliveMax is how many keepalive intervals a request may go
	// unanswered before the connection is closed (OpenSSH
	// ServerAliveCountMax): a silent peer is noticed within
	// interval × (max+1), 20 s by default.
	DefaultKeepaliveMax = 3
)

// Environment variables read by [Config.FromEnv].
const (
	EnvKnownHosts = "CAPSTAN_KNOWN_HOSTS"    // path list (':'-separated), like --known-hosts
	EnvIdentity   = "CAPSTAN_IDENTITY"       // path list (':'-separated), like --identity
	EnvPassphrase = "CAPSTAN_SSH_PASSPHRASE" // passphrase of encrypted private keys
	EnvAuthSock   = "SSH_AUTH_SOCK"          // ssh-agent socket
)

// Config is the SSH configuration shared by every host of a Pool. Its
// fields mirror deploy.yml's ssh: block and the --known-hosts / --identity
// flags. The zero value is usable: OpenSSH's default identities, no agent,
// ~/.ssh/known_hosts, strict host key checking, user root, port 22.
type Config struct {
	// User, Port, Proxy: deploy.yml ssh.user, ssh.port, ssh.proxy
	// ("host" or "user@host[:port]"; a bare host means root@host). They
	// apply to hosts that do not set their own; ""/0 mean unset, so
	// ssh_config (if read) and then root / 22 apply.
	User  string
	Port  int
	Proxy string

	// Keys are private key files (ssh.keys, --identity, CAPSTAN_IDENTITY).
	// When Keys and KeyData are both empty, OpenSSH's default identities
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa are used if they exist.
	// A listed file that cannot be read or decrypted is an error
	// (ErrConfig); a default one is skipped.
	Keys []string
	// KeyData holds private keys in PEM form (the resolved values of
	// ssh.key_data secrets). They never touch the disk. Add them to the
	// Redactor too.
	KeyData []string
	// KeysOnly (ssh.keys_only): use only Keys, KeyData and ssh_config
	// IdentityFile; agent keys are used only if they match one of them.
	KeysOnly bool
	// Passphrase decrypts encrypted private keys (CAPSTAN_SSH_PASSPHRASE).
	Passphrase []byte
	// AgentSocket is the ssh-agent socket (SSH_AUTH_SOCK); "" means no
	// agent.
	AgentSocket string

	// SSHConfig lists OpenSSH client config files to read (ssh.config:
	// true means ~/.ssh/config). nil means none.
	SSHConfig []string

	// KnownHosts lists OpenSSH known_hosts files (--known-hosts,
	// CAPSTAN_KNOWN_HOSTS). nil means ~/.ssh/known_hosts. Missing files
	// count as empty. Hashed entries, [host]:port, @cert-authority and
	// @revoked are understood.
	KnownHosts []string
	// AcceptNew records the key of a host that has no entry yet in the
	// first KnownHosts file and accepts it, like OpenSSH's
	// StrictHostKeyChecking=accept-new. A changed or revoked key is still
	// refused. There is no setting that skips host key checks.
	AcceptNew bool

	// Home is the directory ~ stands for; "" means os.UserHomeDir.
	Home string

	// MaxDials bounds concurrent dials across hosts; 0 means
	// DefaultMaxDials.
	MaxDials int
	// Dials, when set, is a bound shared with other pools (MaxDials is
	// then ignored): a process with a pool per app (capstan serve) bounds
	// its connection setups as one, however many apps share a host.
	Dials *DialLimit
	// ConnectTimeout bounds each connection setup (TCP connect, SSH
	// handshake and authentication, jump hosts included) when the ctx
	// allows longer (capstan.yml ssh.connect_timeout); 0 means
	// DefaultConnectTimeout. A setup that runs out fails with
	// ErrUnreachable.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each Run and Upload from the moment its
	// session is open (capstan.yml ssh.command_timeout): the command is
	// then stopped as on a cancelled ctx and the error wraps ErrTimeout
	// and context.DeadlineExceeded. Connecting is bounded by
	// ConnectTimeout instead; Stream and Dial are not bounded (they are
	// long-lived by design). 0 means no bound beyond the ctx.
	CommandTimeout time.Duration
	// KeepaliveInterval is how often each pooled connection sends a
	// keepalive@openssh.com request; 0 means DefaultKeepaliveInterval,
	// negative disables keepalives.
	KeepaliveInterval time.Duration
	// KeepaliveMax is how many intervals a keepalive request may go
	// unanswered: at the next tick the connection is closed and dropped
	// from the Pool, commands running on it fail with ErrConnectionLost
	// and ErrUnreachable, and the next call re-dials. 0 means
	// DefaultKeepaliveMax.
	KeepaliveMax int

	// Logger receives one debug line per command and connection events.
	// nil discards. Records pass through Redactor.
	Logger *slog.Logger
	// Redactor masks secrets in logs, errors (ExitError.Stderr) and
	// refuses command lines that contain them. nil masks nothing.
	Redactor *redact.Redactor
}

// FromEnv fills unset fields from the environment: CAPSTAN_KNOWN_HOSTS,
// CAPSTAN_IDENTITY, CAPSTAN_SSH_PASSPHRASE and SSH_AUTH_SOCK. Flags applied
// after FromEnv take precedence. getenv is usually os.Getenv.
func (c *Config) FromEnv(getenv func(string) string) {
	if v := getenv(EnvKnownHosts); v != "" && c.KnownHosts == nil {
		c.KnownHosts = filepath.SplitList(v)
	}
	if v := getenv(EnvIdentity); v != "" && c.Keys == nil {
		c.Keys = filepath.SplitList(v)
	}
	if v := getenv(EnvPassphrase); v != "" && c.Passphrase == nil {
		c.Passphrase = []byte(v)
		c.Redactor = c.Redactor.With(v)
	}
	if v := getenv(EnvAuthSock); v != "" && c.AgentSocket == "" {
		c.AgentSocket = v
	}
}

func (c *Config) home() string {
	if c.Home != "" {
		return c.Home
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}

func (c *Config) expand(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		return c.home() + p[1:]
	}
	return p
}

func (c *Config) knownHostsFiles() []string {
	if c.KnownHosts == nil {
		return []string{filepath.Join(c.home(), ".ssh", "known_hosts")}
	}
	out := make([]string, len(c.KnownHosts))
	for i, f := range c.KnownHosts {
		out[i] = c.expand(f)
	}
	return out
}

// resolve fills h's unset fields (see Host). Jump hosts are resolved the
// same way, each with its own ssh_config entry.
func (c *Config) resolve(h Host, cfgs []*sshConfig, depth int) (Host, error) {
	if depth > 8 {
		return h, fmt.Errorf("%w: %s: ProxyJump nested too deep", ErrConfig, h.Addr)
	}
	if h.Addr == "" {
		return h, fmt.Errorf("%w: empty host address", ErrConfig)
	}
	alias := h.Addr
	var s hostSettings
	for _, sc := range cfgs {
		hs, err := sc.lookup(alias, c.home())
		if err != nil {
			return h, err
		}
		// earlier files win, like -F then ~/.ssh/config then /etc/ssh/ssh_config
		s.HostName = cmpOr(s.HostName, hs.HostName)
		s.User = cmpOr(s.User, hs.User)
		s.ProxyJump = cmpOr(s.ProxyJump, hs.ProxyJump)
		if s.Port == 0 {
			s.Port = hs.Port
		}
		s.IdentityFiles = append(s.IdentityFiles, hs.IdentityFiles...)
	}
	out := h
	out.Addr = cmpOr(s.HostName, h.Addr)
	// deploy.yml's user, port and proxy apply to the targets, not to jump
	// hosts: a bare jump host is root@host:22 (Kamal) unless ssh_config
	// says otherwise.
	cUser, cPort, cProxy := c.User, c.Port, c.Proxy
	if depth > 0 {
		cUser, cPort, cProxy = "", 0, ""
	}
	out.User = cmpOr(h.User, cUser, s.User, DefaultUser)
	if out.Port == 0 {
		out.Port = cmpOr(cPort, s.Port, DefaultPort)
	}
	out.IdentityFiles = append(append([]string(nil), h.IdentityFiles...), s.IdentityFiles...)
	for i, f := range out.IdentityFiles {
		out.IdentityFiles[i] = c.expand(f)
	}
	if h.ProxyJump == nil {
		spec := cProxy
		if spec == "" && !strings.EqualFold(s.ProxyJump, "none") {
			spec = s.ProxyJump
		}
		if spec != "" {
			for _, part := range strings.Split(spec, ",") {
				j, err := ParseHost(strings.TrimSpace(part))
				if err != nil {
					return h, fmt.Errorf("proxy jump for %s: %w", h.Addr, err)
				}
				out.ProxyJump = append(out.ProxyJump, j)
			}
		}
	}
	jumps := make([]Host, 0, len(out.ProxyJump))
	for _, j := range out.ProxyJump {
		rj, err := c.resolve(j, cfgs, depth+1)
		if err != nil {
			return h, err
		}
		jumps = append(jumps, rj)
	}
	out.ProxyJump = jumps
	return out, nil
}

func cmpOr[T comparable](vals ...T) T {
	var zero T
	for _, v := range vals {
		if v != zero {
			return v
		}
	}
	return zero
}

// DialLimit bounds concurrent connection setups across the pools that
// share it (Config.Dials).
type DialLimit struct{ sem chan struct{} }

// NewDialLimit returns a bound of n concurrent dials (DefaultMaxDials when
// n <= 0).
func NewDialLimit(n int) *DialLimit {
	if n <= 0 {
		n = DefaultMaxDials
	}
	return &DialLimit{sem: make(chan struct{}, n)}
}
