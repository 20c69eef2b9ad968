package hostexec

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// sshConfig is the subset of an OpenSSH client config capstan reads: Host
// blocks with HostName, User, Port, IdentityFile and ProxyJump. Match blocks
// are skipped (never match) and Include is not followed; other keywords are
// ignored. As in ssh(1), for each keyword the first value obtained wins,
// except IdentityFile, which accumulates.
type sshConfig struct {
	blocks []sshConfigBlock
}

type sshConfigBlock struct {
	patterns []string // nil for a Match block (never matches)
	match    bool
	entries  []sshConfigEntry
}

type sshConfigEntry struct {
	key, value string
	file       string
	line       int
}

// hostSettings is what ssh_config says about one host.
type hostSettings struct {
	HostName, User, ProxyJump string
	Port                      int
	IdentityFiles             []string
}

func parseSSHConfigFile(name string) (*sshConfig, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%w: ssh_config: %w", ErrConfig, err)
	}
	defer f.Close()
	return parseSSHConfig(f, name)
}

func parseSSHConfig(r io.Reader, name string) (*sshConfig, error) {
	c := &sshConfig{blocks: []sshConfigBlock{{patterns: []string{"*"}}}} // lines before any Host apply to all
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, value := splitConfigLine(line)
		if value == "" {
			return nil, fmt.Errorf("%w: %s:%d: %s has no value", ErrConfig, name, n, key)
		}
		switch strings.ToLower(key) {
		case "host":
			c.blocks = append(c.blocks, sshConfigBlock{patterns: strings.Fields(value)})
		case "match":
			c.blocks = append(c.blocks, sshConfigBlock{match: true})
		default:
			b := &c.blocks[len(c.blocks)-1]
			b.entries = append(b.entries, sshConfigEntry{strings.ToLower(key), unquote(value), name, n})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
	}
	return c, nil
}

// splitConfigLine splits "Key value", "Key=value" and "Key = value".
func splitConfigLine(line string) (string, string) {
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return line, ""
	}
	key, rest := line[:i], strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimPrefix(rest, "=")
	return key, strings.TrimSpace(rest)
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// matches implements ssh_config pattern lists: any positive pattern
// matches and no negated one does.
func (b *sshConfigBlock) matches(host string) bool {
	if b.match {
		return false
	}
	ok := false
	for _, p := range b.patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		m, err := path.Match(strings.ToLower(p), strings.ToLower(host))
		if err != nil || !m {
			continue
		}
		if neg {
			return false
		}
		ok = true
	}
	return ok
}

// lookup returns the settings for host alias (as written by the user).
func (c *sshConfig) lookup(alias, home string) (hostSettings, error) {
	var s hostSettings
	seen := map[string]bool{}
	for i := range c.blocks {
		b := &c.blocks[i]
		if !b.matches(alias) {
			continue
		}
		for _, e := range b.entries {
			if e.key != "identityfile" && seen[e.key] {
				continue
			}
			seen[e.key] = true
			switch e.key {
			case "hostname":
				s.HostName = strings.ReplaceAll(e.value, "%h", alias)
			case "user":
				s.User = e.value
			case "port":
				var p int
				if _, err := fmt.Sscanf(e.value, "%d", &p); err != nil || p <= 0 || p > 65535 {
					return s, fmt.Errorf("%w: %s:%d: bad Port %q", ErrConfig, e.file, e.line, e.value)
				}
				s.Port = p
			case "identityfile":
				s.IdentityFiles = append(s.IdentityFiles, e.value)
			case "proxyjump":
				s.ProxyJump = e.value
			}
		}
	}
	// Tokens in IdentityFile are expanded once User/Port/HostName are known.
	for i, f := range s.IdentityFiles {
		s.IdentityFiles[i] = expandTokens(f, alias, s, home)
	}
	return s, nil
}

// expandTokens expands ~ and the %d %h %n %p %r %u %% tokens ssh(1)
// supports in IdentityFile.
func expandTokens(v, alias string, s hostSettings, home string) string {
	if v == "~" || strings.HasPrefix(v, "~/") {
		v = home + v[1:]
	}
	if !strings.Contains(v, "%") {
		return v
	}
	hostname := s.HostName
	if hostname == "" {
		hostname = alias
	}
	user := s.User
	if user == "" {
		user = DefaultUser
	}
	port := s.Port
	if port == 0 {
		port = DefaultPort
	}
	local := os.Getenv("USER")
	return strings.NewReplacer("%%", "%", "%d", home, "%h", hostname, "%n", alias,
		"%p", fmt.Sprint(port), "%r", user, "%u", local).Replace(v)
}
