// Package gitwatch follows a branch of a git repository: a cheap check of
// the remote head (ls-remote), and a shallow checkout (HistoryDepth
// commits) of a new head into a cache directory only when it moved. The
// new head's history is compared with the previous revision's to tell a
// force-push (RewriteKind). A checkout is bounded in bytes, files and
// object size (ErrTooLarge). Authentication: HTTPS tokens and SSH deploy keys with host
// keys verified against known_hosts files. CheckoutRef fetches another
// ref (a pull request's head) the same way, into checkouts of its own.
//
// gitwatch knows nothing of deployments; the daemon turns its revisions into
// reconcile passes.
package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Sentinel errors.
var (
	// ErrBranchNotFound: the remote has no such branch.
	ErrBranchNotFound = errors.New("branch not found on remote")
	// ErrAuth: the credentials are unusable or were refused.
	ErrAuth = errors.New("git authentication failed")
	// ErrUnreachable: the remote could not be reached; retry with backoff.
	ErrUnreachable = errors.New("git remote unreachable")
)

// DefaultBranch is followed when Source.Branch is empty.
const DefaultBranch = "main"

// Source is a repository branch to follow.
type Source struct {
	// URL is ssh://…, git@host:path, https://…, or a local path.
	URL    string
	Branch string
	Auth   Auth
	// MaxBytes bounds what one checkout writes under the cache directory:
	// the downloaded pack, its index and the worktree. Zero means
	// DefaultMaxBytes. Going over it fails the checkout with ErrTooLarge.
	MaxBytes int64
	// MaxFiles bounds the files in a checked-out tree, counted before any
	// is written. Zero means DefaultMaxFiles. Going over it fails the
	// checkout with ErrTooLarge.
	MaxFiles int
	// MaxObjectBytes bounds any one object fetched (a file's content, a
	// directory listing, a commit), checked as the pack arrives; it bounds
	// the memory a checkout takes too. Zero means DefaultMaxObjectBytes.
	// Going over it fails the checkout with ErrTooLarge.
	MaxObjectBytes int64
}

// Auth holds the credentials of a Source. The zero value is anonymous.
type Auth struct {
	// Token is an HTTPS access token, sent as the basic-auth password
	// with TokenUser (default "x-access-token").
	Token     string
	TokenUser string
	// SSHKey is a PEM private key (a deploy key) for ssh:// URLs, with
	// SSHKeyPassphrase when encrypted. SSHUser defaults to "git".
	SSHKey           []byte
	SSHKeyPassphrase string
	SSHUser          string
	// KnownHosts are OpenSSH known_hosts files the server's key must be
	// in. Required for SSH URLs: there is no mode that skips the check.
	KnownHosts []string
}

// Revision is one checked-out commit.
type Revision struct {
	SHA     string
	Branch  string
	Author  string
	Email   string
	Message string
	Time    time.Time
	// Dir holds the commit's tree (a worktree). It stays valid until the
	// Repo checks out a newer revision and prunes old ones.
	Dir string
	// Previous is the SHA this revision replaced: the Repo's revision
	// before it, or the one given to SetLast. Empty for a first checkout.
	Previous string
	// Rewrite is how the branch was force-pushed from Previous to SHA;
	// empty for a fast-forward, or when it could not be told (the two
	// histories did not meet within HistoryDepth commits).
	Rewrite RewriteKind
	// Rewritten is a one-line account of Rewrite naming both short SHAs,
	// for logs and alerts; empty when Rewrite is.
	Rewritten string
}

// Repo follows one Source into a cache directory. It is safe for
// concurrent use; operations are serialized.
type Repo struct {
	src   Source
	dir   string
	depth int        // commits fetched per checkout; 0 means the full history
	mu    sync.Mutex // serializes Sync
	refMu sync.Mutex // serializes CheckoutRef
	cur   *Revision
	last  string // from SetLast, compared with while cur is nil
	// tooLarge is the last head refused with ErrTooLarge, and why: it is
	// not fetched again.
	tooLarge struct {
		sha string
		err error
	}
}

// Open prepares a Repo caching its checkouts under dir (created if
// missing). It does not touch the network.
func Open(dir string, src Source) (*Repo, error) {
	if src.URL == "" {
		return nil, errors.New("gitwatch: empty repository URL")
	}
	if src.Branch == "" {
		src.Branch = DefaultBranch
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Repo{src: src, dir: dir, depth: HistoryDepth}, nil
}

// SetLast tells a Repo with no current revision (in a new process) the
// SHA it last handed out, as recorded by the caller. The next Sync
// reports that SHA as Revision.Previous and compares the new head's
// history with it, using its checkout when the cache directory still holds
// it. Call it before the first Sync; once a Sync has checked out a
// revision, SetLast does nothing. sha must be a full hex SHA-1.
func (r *Repo) SetLast(sha string) error {
	if len(sha) != 40 || !plumbing.IsHash(sha) {
		return fmt.Errorf("gitwatch: SetLast: %q is not a full commit SHA", sha)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		r.last = strings.ToLower(sha)
	}
	return nil
}

// Source returns what the Repo follows.
func (r *Repo) Source() Source { return r.src }

func (r *Repo) ref() plumbing.ReferenceName { return plumbing.NewBranchReferenceName(r.src.Branch) }

func (r *Repo) auth() (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(r.src.URL)
	if err != nil {
		return nil, fmt.Errorf("gitwatch: %s: %w", r.src.URL, err)
	}
	a := r.src.Auth
	switch ep.Protocol {
	case "ssh":
		if len(a.KnownHosts) == 0 {
			return nil, fmt.Errorf("%w: %s: SSH needs known_hosts files to verify the server", ErrAuth, r.src.URL)
		}
		cb, err := knownhosts.New(a.KnownHosts...)
		if err != nil {
			return nil, fmt.Errorf("%w: known_hosts: %v", ErrAuth, err)
		}
		user := a.SSHUser
		if user == "" {
			user = ep.User
		}
		if user == "" {
			user = "git"
		}
		if len(a.SSHKey) == 0 {
			return nil, fmt.Errorf("%w: %s: no SSH deploy key configured", ErrAuth, r.src.URL)
		}
		pk, err := gitssh.NewPublicKeys(user, a.SSHKey, a.SSHKeyPassphrase)
		if err != nil {
			return nil, fmt.Errorf("%w: deploy key: %v", ErrAuth, err)
		}
		pk.HostKeyCallback = cb
		pk.HostKeyCallbackHelper = gitssh.HostKeyCallbackHelper{HostKeyCallback: cb}
		return pk, nil
	case "http", "https":
		if a.Token == "" {
			return nil, nil
		}
		user := a.TokenUser
		if user == "" {
			user = "x-access-token"
		}
		return &githttp.BasicAuth{Username: user, Password: a.Token}, nil
	}
	return nil, nil
}

// RemoteHead returns the SHA the remote branch points at, without fetching
// any object (git ls-remote).
func (r *Repo) RemoteHead(ctx context.Context) (string, error) {
	return r.remoteRef(ctx, r.ref(), ErrBranchNotFound)
}

// Current returns the last checked-out revision, or nil.
func (r *Repo) Current() *Revision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Sync checks the remote head and, only when it differs from the current
// checkout, clones the new head shallowly into a fresh directory and
// compares its history with the previous revision's (Revision.Rewrite).
// Checkouts other than the new one are then removed. It returns the
// current revision and whether it changed. Errors: ErrAuth,
// ErrBranchNotFound, ErrUnreachable, ErrTooLarge, or ctx's error; the
// current revision stays as it was. A head refused with ErrTooLarge is
// not fetched again: Sync returns the same error until the branch moves.
func (r *Repo) Sync(ctx context.Context) (*Revision, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	head, err := r.RemoteHead(ctx)
	if err != nil {
		return r.cur, false, err
	}
	if r.cur != nil && r.cur.SHA == head {
		return r.cur, false, nil
	}
	if head == r.tooLarge.sha {
		return r.cur, false, r.tooLarge.err
	}
	prev := r.last
	if r.cur != nil {
		prev = r.cur.SHA
	}
	rev, repo, err := r.checkout(ctx, r.dir, r.ref(), head, r.depth)
	if errors.Is(err, ErrTooLarge) {
		r.tooLarge.sha, r.tooLarge.err = head, err
	}
	if err != nil {
		return r.cur, false, err
	}
	r.compare(rev, repo, prev)
	r.cur = rev
	r.prune(rev.Dir)
	return rev, true, nil
}

// checkout clones depth commits of ref into base/<sha> (reusing a
// complete earlier checkout of the same SHA) and returns the revision with
// its repository. sha is the head ls-remote reported; when ref moved
// since, the revision is of what the clone got.
func (r *Repo) checkout(ctx context.Context, base string, ref plumbing.ReferenceName, sha string, depth int) (*Revision, *git.Repository, error) {
	branch := ""
	if ref.IsBranch() {
		branch = ref.Short()
	}
	dst := filepath.Join(base, sha)
	if repo, err := git.PlainOpen(dst); err == nil {
		if rev, err := revisionOf(repo, sha, branch, dst); err == nil {
			return rev, repo, nil
		}
	}
	_ = os.RemoveAll(dst)
	tmp := dst + ".tmp"
	repo, err := r.clone(ctx, tmp, ref, depth)
	if err != nil && depth > 0 && isShallowUnsupported(err) {
		repo, err = r.clone(ctx, tmp, ref, 0)
	}
	if err != nil {
		return nil, nil, err
	}
	head, err := repo.Head()
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, nil, err
	}
	if head.Hash().String() != sha {
		// The ref moved between ls-remote and clone: take what we got.
		sha = head.Hash().String()
		dst = filepath.Join(base, sha)
		_ = os.RemoveAll(dst)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, nil, err
	}
	repo, err = git.PlainOpen(dst)
	if err != nil {
		return nil, nil, err
	}
	rev, err := revisionOf(repo, sha, branch, dst)
	return rev, repo, err
}

// clone fetches depth commits of ref (0: all) into dir, counts the files
// of its tree, and only then writes the worktree, everything written
// through the Source's limits. HEAD is the branch for a branch ref, else
// detached at the fetched commit. On error nothing is left in dir.
func (r *Repo) clone(ctx context.Context, dir string, ref plumbing.ReferenceName, depth int) (*git.Repository, error) {
	_ = os.RemoveAll(dir)
	auth, err := r.auth()
	if err != nil {
		return nil, err
	}
	lim := newLimiter(r.src)
	wt := limitFS{Filesystem: osfs.New(dir), l: lim}
	dot, err := wt.Chroot(git.GitDirName)
	if err != nil {
		return nil, err
	}
	st := limitStorage{Storage: filesystem.NewStorageWithOptions(dot, cache.NewObjectLRUDefault(),
		filesystem.Options{LargeObjectThreshold: largeObject}), l: lim, drain: isLocal(r.src.URL)}
	repo, err := fetchRef(ctx, st, wt, r.src.URL, ref, depth, auth)
	if err == nil {
		err = checkoutHead(repo, lim)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		if lerr := lim.exceeded(); lerr != nil {
			return nil, lerr
		}
		return nil, classify(r.src.URL, err)
	}
	return repo, nil
}

// fetchRef initializes a repository in st and wt and fetches ref alone
// (no tags) from url into the same ref name, then points HEAD at it.
func fetchRef(ctx context.Context, st limitStorage, wt billy.Filesystem, url string, ref plumbing.ReferenceName, depth int, auth transport.AuthMethod) (*git.Repository, error) {
	repo, err := git.Init(st, wt)
	if err != nil {
		return nil, err
	}
	spec := config.RefSpec("+" + ref + ":" + ref)
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}, Fetch: []config.RefSpec{spec}}); err != nil {
		return nil, err
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{spec},
		Depth: depth, Auth: auth, Tags: git.NoTags})
	if err != nil {
		return nil, err
	}
	got, err := repo.Reference(ref, false)
	if err != nil {
		return nil, err
	}
	head := plumbing.NewHashReference(plumbing.HEAD, got.Hash())
	if ref.IsBranch() {
		head = plumbing.NewSymbolicReference(plumbing.HEAD, ref)
	}
	return repo, repo.Storer.SetReference(head)
}

// largeObject is the size above which a checkout streams a file from the
// pack instead of reading it whole into memory.
const largeObject = 1 << 20

// checkoutHead writes the worktree of a clone made with NoCheckout, once
// its tree is known to be within the file limit.
func checkoutHead(repo *git.Repository, lim *limiter) error {
	head, err := repo.Head()
	if err != nil {
		return err
	}
	c, err := repo.CommitObject(head.Hash())
	if err != nil {
		return err
	}
	tree, err := c.Tree()
	if err != nil {
		return err
	}
	if _, err := lim.countFiles(tree); err != nil {
		return err
	}
	w, err := repo.Worktree()
	if err != nil {
		return err
	}
	return w.Reset(&git.ResetOptions{Commit: head.Hash(), Mode: git.HardReset})
}

// compare fills rev's Previous and Rewrite from prev's history, read from
// its checkout when the cache still holds it. A history that cannot be
// read makes no claim.
func (r *Repo) compare(rev *Revision, repo *git.Repository, prev string) {
	if prev == "" || prev == rev.SHA {
		return
	}
	rev.Previous = prev
	headID, prevID := plumbing.NewHash(rev.SHA), plumbing.NewHash(prev)
	head, err := walkHistory(repo, headID)
	if err != nil {
		return
	}
	var old *history
	if prepo, err := git.PlainOpen(filepath.Join(r.dir, prev)); err == nil {
		old, _ = walkHistory(prepo, prevID)
	}
	kind, base := rewrite(head, headID, prevID, old)
	rev.Rewrite = kind
	rev.Rewritten = describeRewrite(r.src.Branch, kind, prevID, headID, base)
}

func revisionOf(repo *git.Repository, sha, branch, dir string) (*Revision, error) {
	c, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return nil, err
	}
	return &Revision{SHA: sha, Branch: branch, Author: c.Author.Name, Email: c.Author.Email,
		Message: strings.TrimSpace(c.Message), Time: c.Author.When, Dir: dir}, nil
}

// prune removes branch checkouts other than keep (never the ref
// checkouts of CheckoutRef).
func (r *Repo) prune(keep string) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(r.dir, e.Name())
		if p != keep && e.Name() != refsDir {
			_ = os.RemoveAll(p)
		}
	}
}

// isLocal reports whether url is served by a local git-upload-pack.
func isLocal(url string) bool {
	ep, err := transport.NewEndpoint(url)
	return err == nil && ep.Protocol == "file"
}

func isShallowUnsupported(err error) bool {
	return strings.Contains(err.Error(), "shallow") || strings.Contains(err.Error(), "capabilit")
}

func classify(url string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		strings.Contains(err.Error(), "unable to authenticate"), strings.Contains(err.Error(), "knownhosts"),
		strings.Contains(err.Error(), "key mismatch"):
		return fmt.Errorf("%w: %s: %v", ErrAuth, redactURL(url), err)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, redactURL(url), err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnreachable, redactURL(url), err)
}

// redactURL drops a password from a URL for messages.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		if at := strings.IndexByte(rest, '@'); at >= 0 {
			if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
				return u[:i+3] + rest[:colon] + ":***" + rest[at:]
			}
		}
	}
	return u
}
