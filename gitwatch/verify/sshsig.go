package verify

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
)

const (
	sshArmorBegin = "-----BEGIN SSH SIGNATURE-----"
	sshArmorEnd   = "-----END SSH SIGNATURE-----"
	sshsigMagic   = "SSHSIG"
	sshsigVersion = 1
	gitNamespace  = "git"
	maxArmorBytes = 64 << 10 // far above any real signature (rsa-16384 is ~5 KiB)
)

// sshSig is a parsed sshsig blob (OpenSSH PROTOCOL.sshsig).
type sshSig struct {
	PublicKey     []byte
	Namespace     string
	Reserved      string
	HashAlgorithm string
	Signature     []byte
}

// wireSig is the blob after the 6-byte magic, in wire order.
type wireSig struct {
	Version       uint32
	PublicKey     []byte
	Namespace     string
	Reserved      string
	HashAlgorithm string
	Signature     []byte
}

// parseSSHArmor decodes an armored SSH signature: the BEGIN line, base64
// lines, the END line, and nothing but blank space after it.
func parseSSHArmor(armored string) (*sshSig, error) {
	if len(armored) > maxArmorBytes {
		return nil, errors.New("signature too large")
	}
	s := strings.TrimSpace(strings.ReplaceAll(armored, "\r\n", "\n"))
	body, ok := strings.CutPrefix(s, sshArmorBegin)
	if !ok {
		return nil, errors.New("missing " + sshArmorBegin)
	}
	body, ok = strings.CutSuffix(body, sshArmorEnd)
	if !ok {
		return nil, errors.New("missing " + sshArmorEnd)
	}
	b64 := strings.Join(strings.Fields(body), "")
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("signature armor: %w", err)
	}
	return parseSSHSigBlob(blob)
}

// parseSSHSigBlob decodes the binary sshsig blob.
func parseSSHSigBlob(blob []byte) (*sshSig, error) {
	rest, ok := strings.CutPrefix(string(blob), sshsigMagic)
	if !ok {
		return nil, errors.New("signature blob: bad magic")
	}
	var w wireSig
	if err := ssh.Unmarshal([]byte(rest), &w); err != nil {
		return nil, fmt.Errorf("signature blob: %w", err)
	}
	if w.Version != sshsigVersion {
		return nil, fmt.Errorf("signature blob: version %d, want %d", w.Version, sshsigVersion)
	}
	return &sshSig{PublicKey: w.PublicKey, Namespace: w.Namespace, Reserved: w.Reserved, HashAlgorithm: w.HashAlgorithm, Signature: w.Signature}, nil
}

// marshal is the inverse of parseSSHSigBlob.
func (s *sshSig) marshal() []byte {
	return append([]byte(sshsigMagic), ssh.Marshal(wireSig{sshsigVersion, s.PublicKey, s.Namespace, s.Reserved, s.HashAlgorithm, s.Signature})...)
}

// signedData is what the key signed over message: "SSHSIG" ||
// string(namespace) || string(reserved) || string(hash_alg) || string(H(message)).
func (s *sshSig) signedData(message []byte) ([]byte, error) {
	var h []byte
	switch s.HashAlgorithm {
	case "sha256":
		sum := sha256.Sum256(message)
		h = sum[:]
	case "sha512":
		sum := sha512.Sum512(message)
		h = sum[:]
	default:
		return nil, fmt.Errorf("unsupported hash algorithm %q", s.HashAlgorithm)
	}
	return append([]byte(sshsigMagic), ssh.Marshal(struct {
		Namespace, Reserved, HashAlgorithm string
		Hash                               []byte
	}{s.Namespace, s.Reserved, s.HashAlgorithm, h})...), nil
}

// verify checks the signature over message with the embedded public key
// and returns that key. It does not look at the namespace or trust.
func (s *sshSig) verify(message []byte) (ssh.PublicKey, error) {
	pub, err := ssh.ParsePublicKey(s.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("signature public key: %w", err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(s.Signature, &sig); err != nil {
		return pub, fmt.Errorf("signature: %w", err)
	}
	if sig.Format == ssh.KeyAlgoRSA { // ssh-rsa is SHA-1, which PROTOCOL.sshsig forbids
		return pub, errors.New("ssh-rsa (SHA-1) signature")
	}
	data, err := s.signedData(message)
	if err != nil {
		return pub, err
	}
	if err := pub.Verify(data, &sig); err != nil {
		return pub, err
	}
	return pub, nil
}

// checkSSH fills r for an SSH-signed commit.
func (t *trustSet) checkSSH(c *object.Commit, armored string, r *Result, file string) {
	sig, err := parseSSHArmor(armored)
	if err != nil {
		r.Reason = "malformed SSH signature"
		return
	}
	msg, err := payload(c)
	if err != nil {
		r.Reason = "cannot encode commit"
		return
	}
	pub, err := sig.verify(msg)
	if pub != nil {
		r.Key = ssh.FingerprintSHA256(pub)
	}
	if err != nil {
		r.Reason = "bad signature"
		return
	}
	if sig.Namespace != gitNamespace {
		r.Reason = fmt.Sprintf("signature namespace %q, want %q", sig.Namespace, gitNamespace)
		return
	}
	if cert, ok := pub.(*ssh.Certificate); ok {
		r.Key = ssh.FingerprintSHA256(cert.Key)
		r.Reason = "signed with an SSH certificate; certificates are not supported (cert-authority entries are ignored)"
		return
	}
	r.Signer, r.Reason = t.matchSigner(pub, c.Committer.When)
	if r.Signer == "" && r.Reason == "" {
		r.Reason = untrusted(r.Key, file, "allowed_signers")
	}
	r.Trusted = r.Signer != ""
}
