package verify

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// testRepo is a real git repository made with /usr/bin/git.
type testRepo struct {
	t     *testing.T
	dir   string
	home  string
	clock time.Time // committer time of the next commit; one minute apart
	n     int
	file  string // the file commit changes; "" is f.txt
}

// commitTime is the first test commit's time.
var commitTime = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"git", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func newTestRepo(t *testing.T) *testRepo {
	t.Helper()
	needTools(t)
	r := &testRepo{t: t, dir: t.TempDir(), home: t.TempDir(), clock: commitTime}
	r.git("init", "-q", "-b", "main")
	r.git("config", "user.name", "Ada Lovelace")
	r.git("config", "user.email", "ada@example.org")
	r.git("config", "commit.gpgsign", "false")
	return r
}

// git runs git in the repo with a clean environment and returns stdout.
func (r *testRepo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	date := r.clock.Format(time.RFC3339)
	cmd.Env = []string{"HOME=" + r.home, "GIT_CONFIG_NOSYSTEM=1", "PATH=" + os.Getenv("PATH"),
		"GIT_AUTHOR_DATE=" + date, "GIT_COMMITTER_DATE=" + date}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(out.String())
}

// commit makes a commit changing one file; signArgs go before "commit"
// (e.g. "-c", "gpg.format=ssh", ...), and "-S" is added when there are any.
func (r *testRepo) commit(msg string, signArgs ...string) plumbing.Hash {
	r.t.Helper()
	r.n++
	file := r.file
	if file == "" {
		file = "f.txt"
	}
	if err := os.WriteFile(filepath.Join(r.dir, file), fmt.Appendf(nil, "%d\n", r.n), 0o644); err != nil {
		r.t.Fatal(err)
	}
	r.git("add", file)
	args := append(signArgs, "commit", "-q", "-m", msg)
	if len(signArgs) > 0 {
		args = append(args, "-S")
	}
	r.git(args...)
	r.clock = r.clock.Add(time.Minute)
	return plumbing.NewHash(r.git("rev-parse", "HEAD"))
}

// commitSSH makes a commit signed by the SSH private key at keyFile.
func (r *testRepo) commitSSH(msg, keyFile string) plumbing.Hash {
	return r.commit(msg, "-c", "gpg.format=ssh", "-c", "user.signingkey="+keyFile)
}

// commitPGP makes a commit signed by e with go-git (git has no gpg here).
func (r *testRepo) commitPGP(msg string, e *openpgp.Entity) plumbing.Hash {
	r.t.Helper()
	r.n++
	if err := os.WriteFile(filepath.Join(r.dir, "f.txt"), fmt.Appendf(nil, "%d\n", r.n), 0o644); err != nil {
		r.t.Fatal(err)
	}
	wt, err := r.open().Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := wt.Add("f.txt"); err != nil {
		r.t.Fatal(err)
	}
	sig := &object.Signature{Name: "Ada Lovelace", Email: "ada@example.org", When: r.clock}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, SignKey: e})
	if err != nil {
		r.t.Fatal(err)
	}
	r.clock = r.clock.Add(time.Minute)
	return h
}

func (r *testRepo) open() *git.Repository {
	r.t.Helper()
	repo, err := git.PlainOpen(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	return repo
}

func (r *testRepo) commitObject(h plumbing.Hash) *object.Commit {
	r.t.Helper()
	c, err := r.open().CommitObject(h)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// sshKey is a key pair made by ssh-keygen.
type sshKey struct {
	file string // private key
	pub  string // "type base64 comment"
	fp   string // "SHA256:…" as ssh-keygen -l prints it
}

func newSSHKey(t *testing.T, typ string, bits int) sshKey {
	t.Helper()
	needTools(t)
	file := filepath.Join(t.TempDir(), "id_"+typ)
	args := []string{"-q", "-t", typ, "-N", "", "-C", "test-" + typ, "-f", file}
	if bits > 0 {
		args = append(args, "-b", fmt.Sprint(bits))
	}
	run(t, "ssh-keygen", args...)
	pub, err := os.ReadFile(file + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(run(t, "ssh-keygen", "-l", "-E", "sha256", "-f", file+".pub"))
	return sshKey{file: file, pub: strings.TrimSpace(string(pub)), fp: fields[1]}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// newPGPKey makes an OpenPGP key created at created, valid for lifetime
// (0: forever).
func newPGPKey(t *testing.T, name, email string, created time.Time, lifetime time.Duration) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{Time: func() time.Time { return created }, KeyLifetimeSecs: uint32(lifetime / time.Second)}
	e, err := openpgp.NewEntity(name, "", email, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// armoredPublic is the armored public keys of es.
func armoredPublic(t *testing.T, es ...*openpgp.Entity) string {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := e.Serialize(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func mustNew(t *testing.T, p Policy) *Verifier {
	t.Helper()
	v, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// retamper stores a copy of commit h with old replaced by new in its raw
// bytes (signature header kept) and returns the copy.
func (r *testRepo) retamper(h plumbing.Hash, old, new string) *object.Commit {
	r.t.Helper()
	repo := r.open()
	o, err := repo.Storer.EncodedObject(plumbing.CommitObject, h)
	if err != nil {
		r.t.Fatal(err)
	}
	rd, err := o.Reader()
	if err != nil {
		r.t.Fatal(err)
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(rd); err != nil {
		r.t.Fatal(err)
	}
	rd.Close()
	changed := bytes.Replace(raw.Bytes(), []byte(old), []byte(new), 1)
	if bytes.Equal(changed, raw.Bytes()) {
		r.t.Fatalf("%q not in commit %s", old, h)
	}
	n := repo.Storer.NewEncodedObject()
	n.SetType(plumbing.CommitObject)
	w, _ := n.Writer()
	w.Write(changed)
	w.Close()
	nh, err := repo.Storer.SetEncodedObject(n)
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := repo.CommitObject(nh)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}
