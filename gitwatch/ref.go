package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Sentinel errors of CheckoutRef.
var (
	// ErrRefNotFound: the remote has no such ref (a pull request closed
	// and its ref deleted, or a mistyped name).
	ErrRefNotFound = errors.New("ref not found on remote")
	// ErrRefMoved: the ref points at another commit than the one asked
	// for; a newer event for the same ref is on its way.
	ErrRefMoved = errors.New("ref moved")
)

// RefCheckoutsKept is how many ref checkouts CheckoutRef keeps: the one
// it returns and the RefCheckoutsKept-1 most recently used before it.
const RefCheckoutsKept = 4

// refsDir is the directory under the cache directory holding ref
// checkouts, apart from the branch checkouts (which are named by SHA).
const refsDir = "refs"

// CheckoutRef fetches one ref of the Repo's remote (e.g.
// "refs/pull/7/head", a pull request's head) into its own directory under
// the cache directory, with the Source's auth and limits and one commit
// of history, and returns its revision (Branch and the rewrite fields are
// empty). wantSHA, when not "", must be the ref's head: else the error is
// ErrRefMoved and nothing is fetched when ls-remote already tells.
//
// Ref checkouts never disturb the branch's: Sync does not prune them,
// and CheckoutRef serializes with other CheckoutRef calls only, so a
// slow fetch here never delays a Sync (it holds its own lock during the
// fetch). Revision.Dir stays valid until RefCheckoutsKept later
// checkouts of other SHAs. Errors: ErrRefNotFound, ErrRefMoved, ErrAuth,
// ErrUnreachable, ErrTooLarge, or ctx's error.
func (r *Repo) CheckoutRef(ctx context.Context, ref, wantSHA string) (*Revision, error) {
	name := plumbing.ReferenceName(ref)
	if !strings.HasPrefix(ref, "refs/") || name.Validate() != nil {
		return nil, fmt.Errorf("gitwatch: CheckoutRef: %q is not a full ref name", ref)
	}
	wantSHA = strings.ToLower(wantSHA)
	r.refMu.Lock()
	defer r.refMu.Unlock()
	head, err := r.remoteRef(ctx, name, ErrRefNotFound)
	if err != nil {
		return nil, err
	}
	if err := checkMoved(ref, wantSHA, head); err != nil {
		return nil, err
	}
	base := filepath.Join(r.dir, refsDir)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	rev, _, err := r.checkout(ctx, base, name, head, 1)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	_ = os.Chtimes(rev.Dir, now, now) // most recently used, for pruneRefs
	pruneRefs(base, rev.Dir, RefCheckoutsKept)
	if err := checkMoved(ref, wantSHA, rev.SHA); err != nil {
		return nil, err
	}
	return rev, nil
}

func checkMoved(ref, want, got string) error {
	if want != "" && want != got {
		return fmt.Errorf("%w: %s is at %s, not %s", ErrRefMoved, ref, got[:min(len(got), 12)], want[:min(len(want), 12)])
	}
	return nil
}

// remoteRef returns the SHA the remote ref points at, without fetching
// any object (git ls-remote); notFound is the error when there is none.
func (r *Repo) remoteRef(ctx context.Context, name plumbing.ReferenceName, notFound error) (string, error) {
	auth, err := r.auth()
	if err != nil {
		return "", err
	}
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{r.src.URL}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return "", classify(r.src.URL, err)
	}
	for _, ref := range refs {
		if ref.Name() == name {
			return ref.Hash().String(), nil
		}
	}
	return "", fmt.Errorf("%w: %s on %s", notFound, name.Short(), redactURL(r.src.URL))
}

// pruneRefs removes the entries of base but current beyond the keep most
// recently modified (current counting as one).
func pruneRefs(base, current string, keep int) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	type entry struct {
		path string
		mod  time.Time
	}
	var all []entry
	for _, e := range ents {
		if filepath.Join(base, e.Name()) == current {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		all = append(all, entry{filepath.Join(base, e.Name()), info.ModTime()})
	}
	slices.SortFunc(all, func(a, b entry) int { return b.mod.Compare(a.mod) })
	for i := keep - 1; i < len(all); i++ {
		_ = os.RemoveAll(all[i].path)
	}
}
