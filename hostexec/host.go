package hostexec

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultPort and DefaultUser apply when neither the Host, the Config nor
// ssh_config set a value (Kamal's defaults).
const (
	DefaultPort = 22
	DefaultUser = "root"
)

// Host is one SSH target. Only Addr is required: zero fields are filled in,
// in this order, from the Pool's Config (deploy.yml's ssh: block), from
// ssh_config when Config.SSHConfig names files, and from DefaultUser /
// DefaultPort.
type Host struct {
	// Addr is a host name or IP address, or an ssh_config Host alias.
	Addr string
	// Port; 0 means unset.
	Port int
	// User; "" means unset.
	User string
	// ProxyJump lists jump hosts, the first dialled directly, each next one
	// through the previous. nil means unset (Config.Proxy, then
	// ssh_config ProxyJump); an empty non-nil slice means "no jump".
	ProxyJump []Host
	// IdentityFiles are tried in addition to the Config's identities.
	IdentityFiles []string
}

// ParseHost parses "[user@]host[:port]" (IPv6 in brackets), the form of
// deploy.yml's ssh.proxy and of ProxyJump entries.
func ParseHost(s string) (Host, error) {
	var h Host
	if s == "" {
		return h, fmt.Errorf("%w: empty host", ErrConfig)
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		h.User, s = s[:i], s[i+1:]
		if h.User == "" {
			return h, fmt.Errorf("%w: empty user in %q", ErrConfig, s)
		}
	}
	h.Addr = s
	if host, port, err := net.SplitHostPort(s); err == nil {
		p, perr := strconv.Atoi(port)
		if perr != nil || p <= 0 || p > 65535 {
			return h, fmt.Errorf("%w: bad port in %q", ErrConfig, s)
		}
		h.Addr, h.Port = host, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		h.Addr = s[1 : len(s)-1]
	}
	if h.Addr == "" {
		return h, fmt.Errorf("%w: empty host in %q", ErrConfig, s)
	}
	return h, nil
}

// String returns "user@addr:port" with the parts that are set, followed by
// the jump hosts (" via j1,j2") if any. It is the host's name in logs,
// errors and Stats.
func (h Host) String() string {
	var b strings.Builder
	if h.User != "" {
		b.WriteString(h.User)
		b.WriteByte('@')
	}
	if h.Port != 0 {
		b.WriteString(net.JoinHostPort(h.Addr, strconv.Itoa(h.Port)))
	} else {
		b.WriteString(h.Addr)
	}
	for i, j := range h.ProxyJump {
		if i == 0 {
			b.WriteString(" via ")
		} else {
			b.WriteByte(',')
		}
		b.WriteString(j.String())
	}
	return b.String()
}

// key identifies the connection: everything that changes where or as whom
// we connect.
func (h Host) key() string {
	return h.String() + "|" + strings.Join(h.IdentityFiles, ",")
}

// hostPort is the dial address.
func (h Host) hostPort() string {
	return net.JoinHostPort(h.Addr, strconv.Itoa(h.Port))
}
