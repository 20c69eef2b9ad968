package hostexec

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeys verifies host keys against known_hosts files, reloading them when
// they change on disk, and records new keys in accept-new mode.
type hostKeys struct {
	files     []string
	acceptNew bool

	mu     sync.Mutex
	stamps []fileStamp
	cb     ssh.HostKeyCallback
	// caLines holds file:line of @cert-authority entries. x/crypto's
	// knownhosts reports them in KeyError.Want as if they were host keys,
	// which would turn "unknown host" into "mismatch"; we filter them out.
	caLines map[string]bool
	probe   ssh.PublicKey // a random key no file knows, to list a host's known keys
}

type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func newHostKeys(files []string, acceptNew bool) (*hostKeys, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return &hostKeys{files: files, acceptNew: acceptNew, probe: probe}, nil
}

// callback returns the current callback, reloading the files if any
// changed since the last load.
func (k *hostKeys) callback() (ssh.HostKeyCallback, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.callbackLocked()
}

func (k *hostKeys) callbackLocked() (ssh.HostKeyCallback, error) {
	stamps := make([]fileStamp, len(k.files))
	var existing []string
	for i, f := range k.files {
		fi, err := os.Stat(f)
		switch {
		case err == nil:
			stamps[i] = fileStamp{fi.ModTime(), fi.Size(), true}
			existing = append(existing, f)
		case errors.Is(err, os.ErrNotExist):
		default:
			return nil, fmt.Errorf("%w: known_hosts: %w", ErrConfig, err)
		}
	}
	if k.cb != nil && slices.Equal(stamps, k.stamps) {
		return k.cb, nil
	}
	var cb ssh.HostKeyCallback
	if len(existing) == 0 {
		cb = func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }
	} else {
		var err error
		if cb, err = knownhosts.New(existing...); err != nil {
			return nil, fmt.Errorf("%w: known_hosts: %w", ErrConfig, err)
		}
	}
	caLines := map[string]bool{}
	for _, f := range existing {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: known_hosts: %w", ErrConfig, err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "@cert-authority") {
				caLines[fmt.Sprintf("%s:%d", f, i+1)] = true
			}
		}
	}
	k.cb, k.stamps, k.caLines = cb, stamps, caLines
	return cb, nil
}

// hostKeysOnly drops @cert-authority entries from a KeyError's Want.
func (k *hostKeys) hostKeysOnly(want []knownhosts.KnownKey) []knownhosts.KnownKey {
	var out []knownhosts.KnownKey
	for _, w := range want {
		if !k.caLines[fmt.Sprintf("%s:%d", w.Filename, w.Line)] {
			out = append(out, w)
		}
	}
	return out
}

// algorithms returns the host key algorithms to offer for hostport: the
// types already known for it first (as ssh(1) does), so that a host with
// several keys presents the one we know; then every other supported
// algorithm, so that a different key is reported as a mismatch rather than
// a failed negotiation. nil means the package default (certificates
// first, for @cert-authority hosts).
func (k *hostKeys) algorithms(hostport string) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cb, err := k.callbackLocked()
	if err != nil {
		return nil, err
	}
	var ke *knownhosts.KeyError
	if err := cb(hostport, &net.TCPAddr{}, k.probe); !errors.As(err, &ke) {
		return nil, nil
	}
	want := k.hostKeysOnly(ke.Want)
	if len(want) == 0 {
		return nil, nil
	}
	var known []string
	for _, w := range want {
		t := w.Key.Type()
		if t == ssh.KeyAlgoRSA {
			known = append(known, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
			continue
		}
		known = append(known, t)
	}
	algos := slices.Compact(known)
	for _, a := range ssh.SupportedAlgorithms().HostKeys {
		if !slices.Contains(algos, a) {
			algos = append(algos, a)
		}
	}
	return algos, nil
}

// check is the ssh.HostKeyCallback. host is the name the user gave (for
// messages), hostport the address checked against known_hosts.
func (k *hostKeys) check(host, hostport string, remote net.Addr, key ssh.PublicKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cb, err := k.callbackLocked()
	if err != nil {
		return err
	}
	err = cb(hostport, remote, key)
	if err == nil {
		return nil
	}
	plain := key
	if cert, ok := key.(*ssh.Certificate); ok {
		// No trusted CA vouched for the certificate: check its key as a
		// plain host key, as ssh(1) does.
		plain = cert.Key
		var re *knownhosts.RevokedError
		if errors.As(cb(hostport, remote, cert.SignatureKey), &re) {
			return fmt.Errorf("%w: %s presented a certificate signed by CA %s, marked @revoked at %s:%d",
				ErrHostKeyRevoked, host, ssh.FingerprintSHA256(cert.SignatureKey), re.Revoked.Filename, re.Revoked.Line)
		}
		if err2 := cb(hostport, remote, plain); err2 == nil {
			return nil
		} else if _, isKeyErr := err2.(*knownhosts.KeyError); isKeyErr || errors.As(err2, new(*knownhosts.RevokedError)) {
			err = err2
		}
	}
	fp := ssh.FingerprintSHA256(plain)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	if errors.As(err, &ke) {
		ke = &knownhosts.KeyError{Want: k.hostKeysOnly(ke.Want)}
	}
	switch {
	case errors.As(err, &re):
		return fmt.Errorf("%w: %s presented %s key %s, marked @revoked at %s:%d",
			ErrHostKeyRevoked, host, plain.Type(), fp, re.Revoked.Filename, re.Revoked.Line)
	case ke != nil && len(ke.Want) == 0:
		if k.acceptNew && len(k.files) > 0 {
			if err := k.recordLocked(hostport, plain); err != nil {
				return fmt.Errorf("%w: %s presented %s key %s; recording it: %w",
					ErrUnknownHost, host, plain.Type(), fp, err)
			}
			return nil
		}
		return fmt.Errorf("%w: %s presented %s key %s, which is in none of %s; add it (ssh-keyscan) or run once with accept-new",
			ErrUnknownHost, host, plain.Type(), fp, strings.Join(k.files, ", "))
	case ke != nil:
		where := make([]string, len(ke.Want))
		for i, w := range ke.Want {
			where[i] = fmt.Sprintf("%s:%d (%s %s)", w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key))
		}
		return fmt.Errorf("%w: %s presented %s key %s, but known_hosts has %s; the host key changed or someone is intercepting the connection",
			ErrHostKeyMismatch, host, plain.Type(), fp, strings.Join(where, ", "))
	default: // certificate problems (expired, wrong principal, unknown CA) with no plain entry
		return fmt.Errorf("%w: %s presented %s key %s: %w", ErrHostKeyMismatch, host, key.Type(), fp, err)
	}
}

// recordLocked appends a known_hosts line for hostport to the first file
// and makes the next check see it.
func (k *hostKeys) recordLocked(hostport string, key ssh.PublicKey) error {
	f := k.files[0]
	if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
		return err
	}
	fh, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(hostport)}, key) + "\n"
	if _, err := fh.WriteString(line); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	k.cb = nil // reload
	return nil
}
