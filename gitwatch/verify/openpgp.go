package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// pgpRing is the trusted OpenPGP keys.
type pgpRing struct {
	keys   openpgp.EntityList
	digest [32]byte // of the public keys (not the armor), to tell a change
}

// parsePGPRing reads one or more armored public keys. An empty file is an
// empty ring.
func parsePGPRing(data []byte) (*pgpRing, error) {
	r := &pgpRing{}
	if len(bytes.TrimSpace(data)) == 0 {
		r.digest = sha256.Sum256(nil)
		return r, nil
	}
	var keys openpgp.EntityList
	for i, block := range armorBlocks(data) {
		ks, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(block))
		if err != nil {
			return nil, fmt.Errorf("armored block %d: %w", i+1, err)
		}
		keys = append(keys, ks...)
	}
	h := sha256.New()
	for _, e := range keys {
		if err := e.Serialize(h); err != nil {
			return nil, err
		}
	}
	r.keys = keys
	copy(r.digest[:], h.Sum(nil))
	return r, nil
}

// armorBlocks splits data at each "-----BEGIN PGP" line: exported keys are
// often appended to one file, and one armor decode reads one block.
func armorBlocks(data []byte) [][]byte {
	begin := []byte("-----BEGIN PGP ")
	var out [][]byte
	for {
		i := bytes.Index(data, begin)
		if i < 0 {
			break
		}
		data = data[i:]
		j := bytes.Index(data[len(begin):], begin)
		if j < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:len(begin)+j])
		data = data[len(begin)+j:]
	}
	if len(out) == 0 {
		out = append(out, data) // let the decoder say what is wrong
	}
	return out
}

// readPGPSignature returns the first signature packet of an armored
// detached signature and its raw bytes.
func readPGPSignature(armored string) (*packet.Signature, []byte, error) {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return nil, nil, err
	}
	if block.Type != openpgp.SignatureType {
		return nil, nil, fmt.Errorf("armor type %q", block.Type)
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(block.Body); err != nil {
		return nil, nil, err
	}
	p, err := packet.Read(bytes.NewReader(raw.Bytes()))
	if err != nil {
		return nil, nil, err
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return nil, nil, errors.New("not a signature packet")
	}
	return sig, raw.Bytes(), nil
}

// pgpKeyID is the 16-hex upper-case key ID of the issuer, from the issuer
// subpacket or the low 8 bytes of a v4 issuer fingerprint.
func pgpKeyID(sig *packet.Signature) string {
	switch {
	case sig.IssuerKeyId != nil:
		return fmt.Sprintf("%016X", *sig.IssuerKeyId)
	case len(sig.IssuerFingerprint) == 20:
		return fmt.Sprintf("%016X", binary.BigEndian.Uint64(sig.IssuerFingerprint[12:]))
	case len(sig.IssuerFingerprint) >= 8:
		return fmt.Sprintf("%016X", binary.BigEndian.Uint64(sig.IssuerFingerprint[:8]))
	}
	return ""
}

// checkOpenPGP fills r for an OpenPGP-signed commit. Key expiry and
// revocation are judged at the committer time, or at the signature's
// creation time when that is later; a key created after the committer
// time is "not yet valid".
func (t *trustSet) checkOpenPGP(c *object.Commit, armored string, r *Result, file string) {
	sig, raw, err := readPGPSignature(armored)
	if err != nil {
		r.Reason = "malformed OpenPGP signature"
		return
	}
	r.Key = pgpKeyID(sig)
	var ring openpgp.EntityList
	if t.pgp != nil {
		ring = t.pgp.keys
	}
	if r.Key == "" || sig.IssuerKeyId == nil || len(ring.KeysById(*sig.IssuerKeyId)) == 0 {
		what := "key " + r.Key
		if r.Key == "" {
			what = "a key with no issuer ID"
		}
		r.Reason = untrusted(what, file, "GPG keys")
		return
	}
	msg, err := payload(c)
	if err != nil {
		r.Reason = "cannot encode commit"
		return
	}
	at := c.Committer.When
	if sig.CreationTime.After(at) { // signing may take a moment after committing
		at = sig.CreationTime
	}
	cfg := &packet.Config{Time: func() time.Time { return at }}
	entity, err := openpgp.CheckDetachedSignature(ring, bytes.NewReader(msg), bytes.NewReader(raw), cfg)
	if err != nil {
		r.Reason = pgpReason(err, ring, *sig.IssuerKeyId, at)
		return
	}
	for _, k := range ring.KeysById(*sig.IssuerKeyId) {
		if k.PublicKey.CreationTime.After(c.Committer.When) {
			r.Reason = "key not yet valid"
			return
		}
	}
	r.Trusted = true
	r.Signer = primaryUserID(entity)
}

// pgpReason turns a go-crypto verification error into a Reason.
func pgpReason(err error, ring openpgp.EntityList, id uint64, at time.Time) string {
	switch {
	case errors.Is(err, pgperrors.ErrKeyExpired):
		for _, k := range ring.KeysById(id) {
			if k.PublicKey.CreationTime.After(at) {
				return "key not yet valid"
			}
		}
		return "key expired"
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return "signature expired"
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return "key revoked"
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return "key cannot sign (no signing-capable key with that ID)"
	}
	return "bad signature"
}

// primaryUserID is the entity's primary user ID ("Name (comment) <email>").
func primaryUserID(e *openpgp.Entity) string {
	if e == nil {
		return ""
	}
	if id := e.PrimaryIdentity(); id != nil {
		return id.Name
	}
	return fmt.Sprintf("%016X", e.PrimaryKey.KeyId)
}
