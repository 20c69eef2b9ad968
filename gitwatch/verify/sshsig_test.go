package verify

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// goSign makes an sshsig over msg in Go (the tests with git use the real
// ssh-keygen; this one reaches formats ssh-keygen will not make).
func goSign(t testing.TB, s ssh.AlgorithmSigner, algo, namespace, hash string, msg []byte) *sshSig {
	t.Helper()
	sig := &sshSig{PublicKey: s.PublicKey().Marshal(), Namespace: namespace, HashAlgorithm: hash}
	data, err := sig.signedData(msg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.SignWithAlgorithm(rand.Reader, data, algo)
	if err != nil {
		t.Fatal(err)
	}
	sig.Signature = ssh.Marshal(raw)
	return sig
}

func armorSSH(blob []byte) string {
	b64 := base64.StdEncoding.EncodeToString(blob)
	var lines []string
	for len(b64) > 70 {
		lines = append(lines, b64[:70])
		b64 = b64[70:]
	}
	lines = append(lines, b64)
	return sshArmorBegin + "\n" + strings.Join(lines, "\n") + "\n" + sshArmorEnd + "\n"
}

func TestSSHSig_Algorithms(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ed, _ := ssh.NewSignerFromKey(edPriv)
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := ssh.NewSignerFromKey(rsaPriv)
	msg := []byte("tree 0000\n\nmessage\n")
	for _, tc := range []struct {
		name       string
		signer     ssh.Signer
		algo, hash string
		ok         bool
	}{
		{"ed25519 sha512", ed, ssh.KeyAlgoED25519, "sha512", true},
		{"ed25519 sha256", ed, ssh.KeyAlgoED25519, "sha256", true},
		{"rsa-sha2-512", rs, ssh.KeyAlgoRSASHA512, "sha512", true},
		{"rsa-sha2-256", rs, ssh.KeyAlgoRSASHA256, "sha512", true},
		{"ssh-rsa is SHA-1", rs, ssh.KeyAlgoRSA, "sha512", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := goSign(t, tc.signer.(ssh.AlgorithmSigner), tc.algo, "git", tc.hash, msg)
			parsed, err := parseSSHArmor(armorSSH(sig.marshal()))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parsed.verify(msg); (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tc.ok)
			}
			if _, err := parsed.verify(append(msg, '!')); err == nil {
				t.Fatal("verify accepted another message")
			}
		})
	}
	sig := goSign(t, ed.(ssh.AlgorithmSigner), ssh.KeyAlgoED25519, "git", "sha256", msg)
	sig.HashAlgorithm = "md5"
	if _, err := sig.verify(msg); err == nil || !strings.Contains(err.Error(), "md5") {
		t.Fatalf("md5: %v", err)
	}
}

func TestParseSSHArmor_Rejects(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ed, _ := ssh.NewSignerFromKey(edPriv)
	good := goSign(t, ed.(ssh.AlgorithmSigner), ssh.KeyAlgoED25519, "git", "sha512", []byte("m")).marshal()
	v2 := append([]byte(nil), good...)
	v2[9] = 2 // version is the uint32 after the 6-byte magic
	for name, in := range map[string]string{
		"no begin":     strings.TrimPrefix(armorSSH(good), sshArmorBegin),
		"no end":       strings.TrimSuffix(armorSSH(good), sshArmorEnd+"\n"),
		"bad base64":   sshArmorBegin + "\n@@@\n" + sshArmorEnd,
		"bad magic":    armorSSH(append([]byte("SSHSIH"), good[6:]...)),
		"version 2":    armorSSH(v2),
		"truncated":    armorSSH(good[:len(good)-3]),
		"trailing":     armorSSH(append(good, 0)),
		"huge":         sshArmorBegin + strings.Repeat("A", maxArmorBytes) + sshArmorEnd,
		"text after":   armorSSH(good) + "x",
		"empty armour": sshArmorBegin + sshArmorEnd,
	} {
		if _, err := parseSSHArmor(in); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	if _, err := parseSSHArmor(armorSSH(good)); err != nil {
		t.Fatalf("the unmodified signature: %v", err)
	}
}

// FuzzParseSSHArmor: the parser never panics, a parsed blob round-trips,
// and verifying whatever parsed never panics.
func FuzzParseSSHArmor(f *testing.F) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ed, _ := ssh.NewSignerFromKey(edPriv)
	good := goSign(f, ed.(ssh.AlgorithmSigner), ssh.KeyAlgoED25519, "git", "sha512", []byte("m")).marshal()
	f.Add(armorSSH(good))
	f.Add(armorSSH(good[:20]))
	f.Add(sshArmorBegin + "\nU1NIU0lH\n" + sshArmorEnd)
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		sig, err := parseSSHArmor(in)
		if err != nil {
			return
		}
		again, err := parseSSHSigBlob(sig.marshal())
		if err != nil || !reflect.DeepEqual(again, sig) {
			t.Fatalf("round trip: %v, %#v != %#v", err, again, sig)
		}
		sig.verify([]byte("m")) //nolint:errcheck // only panics matter
	})
}
