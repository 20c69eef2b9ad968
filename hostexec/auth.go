package hostexec

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// defaultIdentities are OpenSSH's default identity files, tried when no key
// is configured.
var defaultIdentities = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// signers holds the keys loaded once per Pool from Config (per-host
// IdentityFiles are loaded at dial time).
type signers struct {
	files []ssh.Signer // Keys, KeyData or default identities
	// allowed: with KeysOnly, the public keys agent keys must match.
	allowed [][]byte
}

// loadSigners loads Config.Keys, Config.KeyData and, when both are empty and
// KeysOnly is off, the default identities.
func (c *Config) loadSigners() (*signers, error) {
	s := &signers{}
	for _, f := range c.Keys {
		sg, pub, err := c.loadKeyFile(c.expand(f))
		if err != nil {
			return nil, err
		}
		s.add(sg, pub)
	}
	for i, pem := range c.KeyData {
		sg, err := c.parseKey([]byte(pem))
		if err != nil {
			// never include the key material in the error
			return nil, fmt.Errorf("%w: ssh key_data[%d]: %w", ErrConfig, i, scrubKeyErr(err))
		}
		s.add(sg, sg.PublicKey())
	}
	if len(c.Keys) == 0 && len(c.KeyData) == 0 && !c.KeysOnly {
		for _, name := range defaultIdentities {
			f := filepath.Join(c.home(), ".ssh", name)
			sg, pub, err := c.loadKeyFile(f)
			if err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					c.logger().Debug("skipping default identity", "file", f, "err", err.Error())
				}
				continue
			}
			s.add(sg, pub)
		}
	}
	return s, nil
}

func (s *signers) add(sg ssh.Signer, pub ssh.PublicKey) {
	if sg != nil {
		s.files = append(s.files, sg)
	}
	if pub != nil {
		s.allowed = append(s.allowed, pub.Marshal())
	}
}

// loadKeyFile reads a private key. For an encrypted key without a
// passphrase, it returns the public key from file.pub (if present) so that
// KeysOnly can still select the matching agent key.
func (c *Config) loadKeyFile(f string) (ssh.Signer, ssh.PublicKey, error) {
	pem, err := os.ReadFile(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: identity: %w", ErrConfig, err)
	}
	sg, err := c.parseKey(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		pub := missing.PublicKey
		if pub == nil {
			if b, rerr := os.ReadFile(f + ".pub"); rerr == nil {
				pub, _, _, _, _ = ssh.ParseAuthorizedKey(b)
			}
		}
		if pub != nil && c.AgentSocket != "" {
			return nil, pub, nil // the agent may hold it
		}
		return nil, nil, fmt.Errorf("%w: identity %s is encrypted; set %s or load it into ssh-agent", ErrConfig, f, EnvPassphrase)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: identity %s: %w", ErrConfig, f, scrubKeyErr(err))
	}
	return sg, sg.PublicKey(), nil
}

func (c *Config) parseKey(pem []byte) (ssh.Signer, error) {
	sg, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) && len(c.Passphrase) > 0 {
		return ssh.ParsePrivateKeyWithPassphrase(pem, c.Passphrase)
	}
	return sg, err
}

// scrubKeyErr keeps the type of a key parsing error but not its text, which
// for some formats quotes input.
func scrubKeyErr(err error) error {
	if errors.Is(err, ssh.ErrNoAuth) {
		return err
	}
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return err
	}
	if err.Error() == "x509: decryption password incorrect" || bytes.Contains([]byte(err.Error()), []byte("passphrase")) {
		return errors.New("wrong passphrase")
	}
	return errors.New("not a valid private key")
}

// authMethods builds the auth methods for one dial: agent keys first (as
// ssh(1) does), then key files. The agent connection is returned so the
// caller closes it after the handshake.
func (p *Pool) authMethods(h Host) ([]ssh.AuthMethod, net.Conn, error) {
	var all []ssh.Signer
	seen := map[string]bool{}
	add := func(sg ssh.Signer) {
		k := string(sg.PublicKey().Marshal())
		if !seen[k] {
			seen[k] = true
			all = append(all, sg)
		}
	}
	allowed := p.signers.allowed
	var hostFiles []ssh.Signer
	for _, f := range h.IdentityFiles {
		sg, pub, err := p.cfg.loadKeyFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // ssh(1) ignores missing IdentityFile entries from ssh_config
			}
			return nil, nil, err
		}
		if pub != nil {
			allowed = append(allowed, pub.Marshal())
		}
		if sg != nil {
			hostFiles = append(hostFiles, sg)
		}
	}
	// Configured keys first: each rejected key costs a round trip and
	// counts against the server's MaxAuthTries.
	for _, sg := range p.signers.files {
		add(sg)
	}
	for _, sg := range hostFiles {
		add(sg)
	}
	var agentConn net.Conn
	if p.cfg.AgentSocket != "" {
		conn, err := net.Dial("unix", p.cfg.AgentSocket)
		if err != nil {
			p.log.Debug("ssh-agent unavailable", "socket", p.cfg.AgentSocket, "err", err)
		} else {
			agentConn = conn
			ag, err := agent.NewClient(conn).Signers()
			if err != nil {
				p.log.Debug("ssh-agent list failed", "err", err)
			}
			for _, sg := range ag {
				if p.cfg.KeysOnly && !containsKey(allowed, sg.PublicKey().Marshal()) {
					continue
				}
				add(sg)
			}
		}
	}
	if len(all) == 0 {
		if agentConn != nil {
			agentConn.Close()
		}
		return nil, nil, fmt.Errorf("%w: no SSH identities for %s (keys, key_data, ~/.ssh/id_*, or ssh-agent)", ErrConfig, h)
	}
	return []ssh.AuthMethod{ssh.PublicKeys(all...)}, agentConn, nil
}

func containsKey(list [][]byte, k []byte) bool {
	for _, l := range list {
		if bytes.Equal(l, k) {
			return true
		}
	}
	return false
}
