package gitwatch

import (
	"fmt"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// HistoryDepth is how many commits of history a checkout fetches: enough
// to tell a fast-forward from a force-push without a full clone.
const HistoryDepth = 50

// RewriteKind says how a branch was force-pushed. The zero value means it
// was not, or that it could not be told within HistoryDepth commits.
type RewriteKind string

// The kinds of history rewrite Sync tells apart.
const (
	// RewriteBack: the new head is an ancestor of the previous revision
	// (a reset to an older commit, force-pushed).
	RewriteBack RewriteKind = "moved back"
	// RewriteDiverged: the two share a commit but neither is an ancestor
	// of the other (an amended or rebased commit, force-pushed).
	RewriteDiverged RewriteKind = "diverged"
	// RewriteUnrelated: both histories are known to their root commits
	// and share none (an unrelated or orphan branch, force-pushed).
	RewriteUnrelated RewriteKind = "unrelated history"
	// RewriteReplaced: the new head's whole history is known and does
	// not hold the previous revision; how the two relate further back
	// than HistoryDepth is not known.
	RewriteReplaced RewriteKind = "replaced"
)

// history is the part of a commit's ancestry a shallow clone holds.
type history struct {
	order    []plumbing.Hash // breadth-first from the tip, nearest first
	seen     map[plumbing.Hash]bool
	complete bool // every path reached a root commit, none a shallow boundary
}

// walkHistory collects the ancestors of tip present in repo.
func walkHistory(repo *git.Repository, tip plumbing.Hash) (*history, error) {
	shallow, err := repo.Storer.Shallow()
	if err != nil {
		return nil, err
	}
	boundary := make(map[plumbing.Hash]bool, len(shallow))
	for _, h := range shallow {
		boundary[h] = true
	}
	h := &history{seen: map[plumbing.Hash]bool{tip: true}, complete: true}
	queue := []plumbing.Hash{tip}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		h.order = append(h.order, id)
		if boundary[id] {
			h.complete = false
			continue
		}
		c, err := repo.CommitObject(id)
		if err != nil {
			if id == tip {
				return nil, err
			}
			h.complete = false // a parent not fetched
			continue
		}
		for _, p := range c.ParentHashes {
			if !h.seen[p] {
				h.seen[p] = true
				queue = append(queue, p)
			}
		}
	}
	return h, nil
}

// rewrite compares the new head's history with the previous revision's,
// when that is still checked out (prev may be nil). It returns the kind
// and, for RewriteDiverged, the nearest common commit found.
func rewrite(head *history, headSHA plumbing.Hash, prevSHA plumbing.Hash, prev *history) (RewriteKind, plumbing.Hash) {
	if head.seen[prevSHA] {
		return "", plumbing.ZeroHash // a fast-forward (or no move)
	}
	if prev != nil {
		if prev.seen[headSHA] {
			return RewriteBack, plumbing.ZeroHash
		}
		for _, id := range head.order {
			if prev.seen[id] {
				return RewriteDiverged, id
			}
		}
		if head.complete && prev.complete {
			return RewriteUnrelated, plumbing.ZeroHash
		}
	}
	if head.complete {
		return RewriteReplaced, plumbing.ZeroHash
	}
	// The walk stopped at the shallow boundary: perhaps a fast-forward
	// longer than HistoryDepth. Say nothing.
	return "", plumbing.ZeroHash
}

// describeRewrite is the one-line account of a rewrite for logs and alerts.
func describeRewrite(branch string, kind RewriteKind, prev, head, base plumbing.Hash) string {
	p, h := short(prev), short(head)
	switch kind {
	case RewriteBack:
		return fmt.Sprintf("branch %s was force-pushed back from %s to an older commit %s", branch, p, h)
	case RewriteDiverged:
		return fmt.Sprintf("branch %s was force-pushed: %s replaces %s, histories diverged after %s", branch, h, p, short(base))
	case RewriteUnrelated:
		return fmt.Sprintf("branch %s was force-pushed: %s replaces %s, an unrelated history with no common commit", branch, h, p)
	case RewriteReplaced:
		return fmt.Sprintf("branch %s was force-pushed: %s replaces %s, which is not in its history", branch, h, p)
	}
	return ""
}

func short(h plumbing.Hash) string { return h.String()[:7] }
