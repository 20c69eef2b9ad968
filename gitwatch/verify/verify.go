// Package verify checks git commit signatures against a trust policy, for
// "deploy only signed commits": SSH signatures (git's gpg.format=ssh, the
// OpenSSH sshsig format) are trusted when their key is listed in an OpenSSH
// allowed_signers file, OpenPGP signatures when their key is in an armored
// key ring file. Verification is done in Go; nothing is run.
//
// Times (allowed_signers valid-after/valid-before, OpenPGP key creation
// and expiry) are judged at the commit's committer time (for OpenPGP, at the
// signature's creation time too when that is later). A key that expired
// after the commit was signed still verifies it.
//
// verify knows nothing of deployments; the daemon decides what an untrusted
// commit means.
package verify

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrPolicy is wrapped by the errors New and Reload return when a trust file
// cannot be read or parsed.
var ErrPolicy = errors.New("signature policy")

// Signature kinds reported in Result.Kind.
const (
	KindSSH     = "ssh"
	KindOpenPGP = "openpgp"
	KindX509    = "x509"    // recognised, never trusted
	KindUnknown = "unknown" // a gpgsig header of no known format
)

// Policy names the trust files; either may be empty (that kind of signature
// is then never trusted).
type Policy struct {
	AllowedSigners string // OpenSSH allowed_signers file
	GPGKeys        string // armored OpenPGP public keys (one or more keys in one file)
}

// Verifier checks commits against the keys of a Policy. It is safe for
// concurrent use; Reload swaps the keys atomically.
type Verifier struct {
	policy Policy
	mu     sync.Mutex // serialises Reload
	trust  atomic.Pointer[trustSet]
}

// trustSet is one immutable load of the policy files.
type trustSet struct {
	signers []signer // allowed_signers entries that are not cert-authority
	notes   []string // what was left out, "FILE:LINE: ..."
	pgp     *pgpRing // nil when no GPGKeys file
	raw     [2][32]byte
	digest  [32]byte // of the trusted keys, to tell a real change
}

// New reads the policy files. A missing or unreadable file, a malformed
// allowed_signers line ("FILE:LINE: ...") or an unreadable key ring return
// an error wrapping ErrPolicy.
func New(p Policy) (*Verifier, error) {
	v := &Verifier{policy: p}
	t, err := load(p)
	if err != nil {
		return nil, err
	}
	v.trust.Store(t)
	return v, nil
}

// Reload re-reads the files and, when their content changed (by hash, so
// a same-size edit within one mtime tick counts), parses them again; on
// error it keeps the keys it had and returns the error. changed reports
// that the trusted set changed (an edited comment is not a change).
func (v *Verifier) Reload() (changed bool, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.trust.Load()
	raw, err := readPolicy(v.policy)
	if err != nil {
		return false, err
	}
	if raw.sums() == old.raw {
		return false, nil
	}
	t, err := parsePolicy(v.policy, raw)
	if err != nil {
		return false, err
	}
	v.trust.Store(t)
	return t.digest != old.digest, nil
}

// Notes lists what the last successful load left out, one "FILE:LINE:
// ..." line each (cert-authority entries: certificates are not
// supported), for the caller to log once. Nil when nothing was.
func (v *Verifier) Notes() []string {
	return slices.Clone(v.trust.Load().notes)
}

// Check verifies one commit. It never fails: every problem is a Result
// with Trusted false and a Reason.
func (v *Verifier) Check(c *object.Commit) Result {
	r := Result{Commit: c.Hash.String(), Author: fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email)}
	sig := strings.TrimLeft(c.PGPSignature, " \n")
	t := v.trust.Load()
	switch {
	case sig == "":
		r.Reason = "unsigned"
	case strings.HasPrefix(sig, sshArmorBegin):
		r.Kind = KindSSH
		t.checkSSH(c, sig, &r, v.policy.AllowedSigners)
	case strings.HasPrefix(sig, "-----BEGIN PGP SIGNATURE-----"):
		r.Kind = KindOpenPGP
		t.checkOpenPGP(c, sig, &r, v.policy.GPGKeys)
	case strings.HasPrefix(sig, "-----BEGIN SIGNED MESSAGE-----"), strings.HasPrefix(sig, "-----BEGIN CERTIFICATE-----"):
		r.Kind = KindX509
		r.Reason = "x509 signatures are not supported"
	default:
		r.Kind = KindUnknown
		r.Reason = "signature of unknown format"
	}
	if r.Trusted {
		r.Reason = ""
	}
	return r
}

// payload returns the bytes a commit signature covers: the commit object
// without its gpgsig header.
func payload(c *object.Commit) ([]byte, error) {
	o := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(o); err != nil {
		return nil, err
	}
	rd, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(rd)
	return b.Bytes(), err
}

// Result is the verdict on one commit.
type Result struct {
	Commit  string // full SHA
	Author  string // "Name <email>"
	Kind    string // "ssh", "openpgp", or "" when unsigned ("x509", "unknown": never trusted)
	Key     string // key seen: "SHA256:…" for SSH, the OpenPGP key ID (16 hex, upper case); "" when unsigned
	Signer  string // the principals (SSH) or the primary user ID (OpenPGP) when trusted
	Trusted bool
	Reason  string // when not trusted, one short line
}

// String is one line for logs and alerts, e.g. "commit 1a2b3c4d5e6f by Ada
// <ada@x>: signed by SHA256:… which is not trusted". It holds public
// values only (key fingerprints and IDs, names from the commit).
func (r Result) String() string {
	short := r.Commit
	if len(short) > 12 {
		short = short[:12]
	}
	head := fmt.Sprintf("commit %s by %s", short, oneLine(r.Author))
	if r.Trusted {
		return fmt.Sprintf("%s: %s signature by %s (%s)", head, r.Kind, oneLine(r.Signer), r.Key)
	}
	return fmt.Sprintf("%s: %s", head, oneLine(r.Reason))
}

// oneLine keeps log lines single: commit metadata is attacker-controlled.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// untrusted is the Reason for a signature by a key that is not in file
// (what names the key, kind the file: "allowed_signers" or "GPG keys").
func untrusted(what, file, kind string) string {
	if file == "" {
		return fmt.Sprintf("signed by %s which is not trusted (no %s file configured)", what, kind)
	}
	return fmt.Sprintf("signed by %s which is not in %s", what, file)
}

// rawPolicy is the bytes of the policy files.
type rawPolicy struct{ signers, pgp []byte }

func (r rawPolicy) sums() [2][32]byte {
	return [2][32]byte{sha256.Sum256(r.signers), sha256.Sum256(r.pgp)}
}

func readPolicy(p Policy) (rawPolicy, error) {
	var r rawPolicy
	var err error
	if p.AllowedSigners != "" {
		if r.signers, err = os.ReadFile(p.AllowedSigners); err != nil {
			return r, fmt.Errorf("%w: %v", ErrPolicy, err)
		}
	}
	if p.GPGKeys != "" {
		if r.pgp, err = os.ReadFile(p.GPGKeys); err != nil {
			return r, fmt.Errorf("%w: %v", ErrPolicy, err)
		}
	}
	return r, nil
}

func load(p Policy) (*trustSet, error) {
	raw, err := readPolicy(p)
	if err != nil {
		return nil, err
	}
	return parsePolicy(p, raw)
}

func parsePolicy(p Policy, raw rawPolicy) (*trustSet, error) {
	t := &trustSet{raw: raw.sums()}
	var err error
	if p.AllowedSigners != "" {
		if t.signers, t.notes, err = parseAllowedSigners(p.AllowedSigners, raw.signers); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
		}
	}
	if p.GPGKeys != "" {
		if t.pgp, err = parsePGPRing(raw.pgp); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrPolicy, p.GPGKeys, err)
		}
	}
	h := sha256.New()
	for _, s := range t.signers {
		fmt.Fprintln(h, s.canonical())
	}
	fmt.Fprintln(h, "--")
	if t.pgp != nil {
		h.Write(t.pgp.digest[:])
	}
	copy(t.digest[:], h.Sum(nil))
	return t, nil
}
