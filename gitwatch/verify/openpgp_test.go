package verify

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing/object"
)

func TestVerifier_OpenPGPTrusted(t *testing.T) {
	r := newTestRepo(t)
	now := time.Now()
	r.clock = now
	ada := newPGPKey(t, "Ada Lovelace", "ada@example.org", now.Add(-time.Hour), 0)
	bob := newPGPKey(t, "Bob", "bob@example.org", now.Add(-time.Hour), 0)
	// Two armored blocks appended in one file (KeyValidity uses one block
	// holding several keys).
	keys := writeFile(t, filepath.Join(t.TempDir(), "keys.asc"), armoredPublic(t, bob)+"\n"+armoredPublic(t, ada))
	v := mustNew(t, Policy{GPGKeys: keys})
	h := r.commitPGP("deploy v1", ada)
	res := v.Check(r.commitObject(h))
	want := Result{Commit: h.String(), Author: "Ada Lovelace <ada@example.org>", Kind: "openpgp",
		Key: fmt.Sprintf("%016X", ada.PrimaryKey.KeyId), Signer: "Ada Lovelace <ada@example.org>", Trusted: true}
	if res != want {
		t.Fatalf("Check = %#v\nwant   %#v", res, want)
	}
	// The same commit, its message changed after signing.
	forged := r.retamper(h, "deploy v1", "deploy v9")
	if res := v.Check(forged); res.Trusted || res.Reason != "bad signature" || res.Key != want.Key {
		t.Fatalf("tampered: %#v, want bad signature by %s", res, want.Key)
	}
}

func TestVerifier_OpenPGPUnknownKey(t *testing.T) {
	r := newTestRepo(t)
	now := time.Now()
	r.clock = now
	ada := newPGPKey(t, "Ada", "ada@example.org", now.Add(-time.Hour), 0)
	eve := newPGPKey(t, "Eve", "eve@example.org", now.Add(-time.Hour), 0)
	keys := writeFile(t, filepath.Join(t.TempDir(), "keys.asc"), armoredPublic(t, ada))
	h := r.commitPGP("sneaky", eve)
	res := mustNew(t, Policy{GPGKeys: keys}).Check(r.commitObject(h))
	id := fmt.Sprintf("%016X", eve.PrimaryKey.KeyId)
	if want := "signed by key " + id + " which is not in " + keys; res.Trusted || res.Key != id || res.Reason != want {
		t.Fatalf("Check = %#v, want reason %q", res, want)
	}
	// An SSH policy only: OpenPGP is never trusted.
	if res := mustNew(t, Policy{}).Check(r.commitObject(h)); res.Trusted || !strings.Contains(res.Reason, "no GPG keys file") {
		t.Fatalf("no key ring: %#v", res)
	}
}

func TestVerifier_OpenPGPKeyValidity(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	expired := newPGPKey(t, "Old", "old@example.org", now.Add(-2*time.Hour), time.Hour)
	future := newPGPKey(t, "Future", "future@example.org", now.Add(time.Hour), 0)
	valid := newPGPKey(t, "Valid", "valid@example.org", now.Add(-2*time.Hour), 0)
	keys := writeFile(t, filepath.Join(t.TempDir(), "keys.asc"), armoredPublic(t, expired, future, valid))
	v := mustNew(t, Policy{GPGKeys: keys})
	for _, tc := range []struct {
		name           string
		key            *openpgp.Entity
		commit, signed time.Time
		reason         string
	}{
		// Signed while the key was valid, committed after it expired.
		{"expired at commit time", expired, now, now.Add(-90 * time.Minute), "key expired"},
		{"not yet valid", future, now, now.Add(2 * time.Hour), "key not yet valid"},
		// Both times inside the key's life: it expired later, which is fine.
		// gpg may ask for a passphrase between committing and signing.
		{"signed after committing", valid, now, now.Add(30 * time.Second), ""},
		{"expired since", expired, now.Add(-90 * time.Minute), now.Add(-90 * time.Minute), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRepo(t)
			r.clock = tc.commit
			c := r.commitObject(r.commitPGP("deploy", nil))
			resignAt(t, c, tc.key, tc.signed)
			res := v.Check(c)
			if res.Trusted != (tc.reason == "") || res.Reason != tc.reason || res.Key != fmt.Sprintf("%016X", tc.key.PrimaryKey.KeyId) {
				t.Fatalf("Check = %#v, want reason %q", res, tc.reason)
			}
		})
	}
}

// resignAt replaces c's signature with one by e made at at.
func resignAt(t *testing.T, c *object.Commit, e *openpgp.Entity, at time.Time) {
	t.Helper()
	msg, err := payload(c)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&b, e, bytes.NewReader(msg), &packet.Config{Time: func() time.Time { return at }}); err != nil {
		t.Fatal(err)
	}
	c.PGPSignature = b.String()
}
