package verify

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

func TestVerifier_SSHTrusted(t *testing.T) {
	for _, kt := range []struct {
		typ  string
		bits int
	}{{"ed25519", 0}, {"ecdsa", 256}, {"ecdsa", 384}, {"rsa", 2048}} {
		t.Run(fmt.Sprint(kt.typ, kt.bits), func(t *testing.T) {
			r := newTestRepo(t)
			key := newSSHKey(t, kt.typ, kt.bits)
			other := newSSHKey(t, "ed25519", 0)
			signers := writeFile(t, filepath.Join(t.TempDir(), "allowed_signers"),
				"# team\n\nbob@example.org "+other.pub+"\nada@example.org,ops@* "+key.pub+"\n")
			v := mustNew(t, Policy{AllowedSigners: signers})
			h := r.commitSSH("deploy v1", key.file)
			res := v.Check(r.commitObject(h))
			want := Result{Commit: h.String(), Author: "Ada Lovelace <ada@example.org>", Kind: "ssh", Key: key.fp, Signer: "ada@example.org,ops@*", Trusted: true}
			if res != want {
				t.Fatalf("Check = %#v\nwant   %#v", res, want)
			}
		})
	}
}

func TestVerifier_Unsigned(t *testing.T) {
	r := newTestRepo(t)
	key := newSSHKey(t, "ed25519", 0)
	v := mustNew(t, Policy{AllowedSigners: writeFile(t, filepath.Join(t.TempDir(), "as"), "ada@example.org "+key.pub+"\n")})
	h := r.commit("plain")
	res := v.Check(r.commitObject(h))
	if res.Trusted || res.Kind != "" || res.Key != "" || res.Reason != "unsigned" {
		t.Fatalf("Check = %#v, want unsigned", res)
	}
}

func TestVerifier_SSHUnknownKey(t *testing.T) {
	r := newTestRepo(t)
	known, stranger := newSSHKey(t, "ed25519", 0), newSSHKey(t, "ed25519", 0)
	file := writeFile(t, filepath.Join(t.TempDir(), "allowed_signers"), "ada@example.org "+known.pub+"\n")
	h := r.commitSSH("sneaky", stranger.file)
	res := mustNew(t, Policy{AllowedSigners: file}).Check(r.commitObject(h))
	if res.Trusted || res.Kind != "ssh" || res.Key != stranger.fp || res.Signer != "" {
		t.Fatalf("Check = %#v, want untrusted with key %s", res, stranger.fp)
	}
	if want := "signed by " + stranger.fp + " which is not in " + file; res.Reason != want {
		t.Fatalf("Reason = %q, want %q", res.Reason, want)
	}
	// No allowed_signers at all: an SSH signature is never trusted.
	res = mustNew(t, Policy{}).Check(r.commitObject(h))
	if res.Trusted || !strings.Contains(res.Reason, "no allowed_signers file") {
		t.Fatalf("with no policy: %#v", res)
	}
}

func TestVerifier_SSHTampered(t *testing.T) {
	r := newTestRepo(t)
	key := newSSHKey(t, "ed25519", 0)
	v := mustNew(t, Policy{AllowedSigners: writeFile(t, filepath.Join(t.TempDir(), "as"), "ada@example.org "+key.pub+"\n")})
	h := r.commitSSH("deploy v1", key.file)
	if res := v.Check(r.commitObject(h)); !res.Trusted {
		t.Fatalf("original not trusted: %#v", res)
	}
	forged := r.retamper(h, "deploy v1", "deploy v6")
	res := v.Check(forged)
	if res.Trusted || res.Reason != "bad signature" || res.Key != key.fp {
		t.Fatalf("tampered commit: %#v, want bad signature by %s", res, key.fp)
	}
	// A struct-level change (no raw source) is re-encoded and fails too.
	c := r.commitObject(h)
	c.Message = "deploy v7\n"
	if res := v.Check(c); res.Trusted || res.Reason != "bad signature" {
		t.Fatalf("modified in memory: %#v", res)
	}
}

func TestVerifier_SSHWrongNamespace(t *testing.T) {
	r := newTestRepo(t)
	key := newSSHKey(t, "ed25519", 0)
	v := mustNew(t, Policy{AllowedSigners: writeFile(t, filepath.Join(t.TempDir(), "as"), "ada@example.org "+key.pub+"\n")})
	parent := r.commitObject(r.commit("base"))
	sig := object.Signature{Name: "Ada Lovelace", Email: "ada@example.org", When: commitTime}
	c := &object.Commit{Author: sig, Committer: sig, Message: "signed for files\n", TreeHash: parent.TreeHash, ParentHashes: []plumbing.Hash{parent.Hash}}
	msg, err := payload(c)
	if err != nil {
		t.Fatal(err)
	}
	msgFile := writeFile(t, filepath.Join(t.TempDir(), "payload"), string(msg))
	run(t, "ssh-keygen", "-Y", "sign", "-n", "file", "-f", key.file, msgFile)
	armored, err := os.ReadFile(msgFile + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	c.PGPSignature = string(armored)
	repo := r.open()
	o := repo.Storer.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		t.Fatal(err)
	}
	h, err := repo.Storer.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	res := v.Check(r.commitObject(h))
	if want := `signature namespace "file", want "git"`; res.Trusted || res.Reason != want || res.Key != key.fp {
		t.Fatalf("Check = %#v, want reason %q", res, want)
	}
	// The same payload signed for "git" is trusted: the test above failed
	// for the namespace, not for the way the commit was built.
	run(t, "ssh-keygen", "-Y", "sign", "-n", "git", "-f", key.file, writeFile(t, msgFile+"2", string(msg)))
	armored, _ = os.ReadFile(msgFile + "2.sig")
	c.PGPSignature = string(armored)
	c.Hash = plumbing.ZeroHash
	if res := v.Check(c); !res.Trusted {
		t.Fatalf("git namespace: %#v", res)
	}
}

func TestVerifier_SSHEntryOptions(t *testing.T) {
	r := newTestRepo(t)
	key := newSSHKey(t, "ed25519", 0)
	h := r.commitSSH("deploy", key.file) // committed at commitTime (2026-01-02)
	dir := t.TempDir()
	for _, tc := range []struct{ name, entry, reason, signer string }{
		{"valid-before past", `ada@x valid-before="20200101" ` + key.pub, "key expired (valid-before", ""},
		{"valid-after future", `ada@x valid-after="29990101Z" ` + key.pub, "key not yet valid (valid-after", ""},
		{"namespaces without git", `ada@x namespaces="file,email" ` + key.pub, `key is allowed only for namespaces "file,email"`, ""},
		{"in window", `ada@x valid-after="202601020304Z",valid-before="20260103",namespaces="file,git" ` + key.pub, "", "ada@x"},
		{"any entry may allow", "old@x valid-before=\"20200101\" " + key.pub + "\nnew@x " + key.pub, "", "new@x"},
		{"namespace patterns", `ada@x namespaces="fi*,g?t" ` + key.pub, "", "ada@x"},
		{"negated namespace", `ada@x namespaces="*,!git" ` + key.pub, "key is allowed only for namespaces", ""},
		{"quoted principals", `"ada@x,bob@y" ` + key.pub, "", "ada@x,bob@y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := mustNew(t, Policy{AllowedSigners: writeFile(t, filepath.Join(dir, "as"), tc.entry+"\n")})
			res := v.Check(r.commitObject(h))
			if res.Trusted != (tc.signer != "") || res.Signer != tc.signer || !strings.HasPrefix(res.Reason, tc.reason) {
				t.Fatalf("Check = %#v, want signer %q reason %q…", res, tc.signer, tc.reason)
			}
		})
	}
}

func TestVerifier_SSHCertificate(t *testing.T) {
	r := newTestRepo(t)
	ca, user := newSSHKey(t, "ed25519", 0), newSSHKey(t, "ed25519", 0)
	run(t, "ssh-keygen", "-q", "-s", ca.file, "-I", "ada", "-n", "ada@example.org", user.file+".pub")
	file := writeFile(t, filepath.Join(t.TempDir(), "as"), `*@example.org cert-authority `+ca.pub+"\n")
	v := mustNew(t, Policy{AllowedSigners: file})
	// git signs with the certificate when user.signingkey names it.
	h := r.commitSSH("by cert", user.file+"-cert.pub")
	res := v.Check(r.commitObject(h))
	if res.Trusted || !strings.Contains(res.Reason, "certificates are not supported") || res.Key != user.fp {
		t.Fatalf("Check = %#v, want an unsupported-certificate reason with key %s", res, user.fp)
	}
	if notes, want := v.Notes(), file+":1: cert-authority entry ignored: SSH certificates are not supported"; len(notes) != 1 || notes[0] != want {
		t.Fatalf("Notes = %q, want [%q]", notes, want)
	}
}

func TestNew_Errors(t *testing.T) {
	dir := t.TempDir()
	key := newSSHKey(t, "ed25519", 0)
	for _, tc := range []struct{ name, content, want string }{
		{"no key", "# c\nada@x\n", "as:2: missing public key"},
		{"bad base64", "ada@x ssh-ed25519 AAAA!!\n", "as:1: no valid public key"},
		{"principals only", "ada@x\n", "as:1: missing public key"},
		{"bad option", "\nada@x verify-required " + key.pub, `as:2: unsupported option "verify-required"`},
		{"bad time", "ada@x valid-before=\"2024\" " + key.pub, "as:1: option valid-before: time \"2024\""},
		{"unterminated quote", "\"ada@x " + key.pub, "as:1: unterminated quoted principals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Policy{AllowedSigners: writeFile(t, filepath.Join(dir, "as"), tc.content)})
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want ErrPolicy containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Policy{AllowedSigners: filepath.Join(dir, "missing")}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := New(Policy{GPGKeys: writeFile(t, filepath.Join(dir, "k.asc"), "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n")}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("bad key ring: %v", err)
	}
}

func TestVerifier_Reload(t *testing.T) {
	r := newTestRepo(t)
	a, b := newSSHKey(t, "ed25519", 0), newSSHKey(t, "ecdsa", 256)
	file := filepath.Join(t.TempDir(), "allowed_signers")
	writeFile(t, file, "ada@x "+a.pub+"\n")
	v := mustNew(t, Policy{AllowedSigners: file})
	ha, hb := r.commitSSH("by a", a.file), r.commitSSH("by b", b.file)
	if !v.Check(r.commitObject(ha)).Trusted || v.Check(r.commitObject(hb)).Trusted {
		t.Fatal("before reload: want a trusted, b not")
	}
	if changed, err := v.Reload(); changed || err != nil {
		t.Fatalf("Reload of an unchanged file = %v, %v", changed, err)
	}
	writeFile(t, file, "# a comment only changes the bytes\nada@x "+a.pub+"\n")
	if changed, err := v.Reload(); changed || err != nil {
		t.Fatalf("Reload after a comment = %v, %v; want no change", changed, err)
	}
	writeFile(t, file, "ada@x "+a.pub+"\nbob@x "+b.pub+"\n")
	if changed, err := v.Reload(); !changed || err != nil {
		t.Fatalf("Reload after adding b = %v, %v", changed, err)
	}
	if res := v.Check(r.commitObject(hb)); !res.Trusted || res.Signer != "bob@x" {
		t.Fatalf("after reload: %#v", res)
	}
	writeFile(t, file, "ada@x "+a.pub+"\nbob@x ssh-ed25519 garbage\n")
	changed, err := v.Reload()
	if changed || !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), file+":2:") {
		t.Fatalf("Reload of a broken file = %v, %v; want a %s:2 error", changed, err, file)
	}
	if !v.Check(r.commitObject(hb)).Trusted || !v.Check(r.commitObject(ha)).Trusted {
		t.Fatal("a broken file dropped the keys loaded before")
	}
	writeFile(t, file, "ada@x "+a.pub+"\n")
	if changed, err := v.Reload(); !changed || err != nil {
		t.Fatalf("Reload removing b = %v, %v", changed, err)
	}
	if v.Check(r.commitObject(hb)).Trusted {
		t.Fatal("b still trusted after removal")
	}
}

func TestResult_String(t *testing.T) {
	r := Result{Commit: "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d", Author: "Ada <ada@x>", Kind: "ssh", Key: "SHA256:abc", Reason: "signed by SHA256:abc which is not trusted"}
	if got, want := r.String(), "commit 1a2b3c4d5e6f by Ada <ada@x>: signed by SHA256:abc which is not trusted"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	r = Result{Commit: "1a2b3c4d5e6f7a8b", Author: "Ada\n<ada@x>", Kind: "openpgp", Key: "0123456789ABCDEF", Signer: "Ada <ada@x>", Trusted: true}
	if got, want := r.String(), "commit 1a2b3c4d5e6f by Ada <ada@x>: openpgp signature by Ada <ada@x> (0123456789ABCDEF)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestMain(m *testing.M) {
	// Tests run git and ssh-keygen; keep the user's agent and config out.
	os.Unsetenv("SSH_AUTH_SOCK")
	if _, err := exec.LookPath("git"); err != nil {
		os.Stderr.WriteString("verify tests: git not found; repo tests skip\n")
	}
	os.Exit(m.Run())
}

func TestVerifier_ConcurrentCheckAndReload(t *testing.T) {
	r := newTestRepo(t)
	a, b := newSSHKey(t, "ed25519", 0), newSSHKey(t, "ed25519", 0)
	file := writeFile(t, filepath.Join(t.TempDir(), "as"), "ada@x "+a.pub+"\n")
	v := mustNew(t, Policy{AllowedSigners: file})
	c := r.commitObject(r.commitSSH("by a", a.file))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			extra := ""
			if i%2 == 0 {
				extra = "bob@x " + b.pub + "\n"
			}
			writeFile(t, file, "ada@x "+a.pub+"\n"+extra)
			if _, err := v.Reload(); err != nil {
				t.Error(err)
			}
		}
	}()
	for range 200 {
		if res := v.Check(c); !res.Trusted {
			t.Fatalf("a lost trust during reloads: %#v", res)
		}
	}
	<-done
}
