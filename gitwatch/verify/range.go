package verify

import (
	"container/heap"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Errors CheckRange wraps.
var (
	// ErrTooManyCommits: more than max commits between base and head.
	ErrTooManyCommits = errors.New("too many commits to verify")
	// ErrBaseNotFound: base is not an ancestor of head within the fetched
	// history (the clone is shallow, or history was rewritten).
	ErrBaseNotFound = errors.New("base not found in the history of head")
)

// CheckRange verifies every commit reachable from head and not from base
// (a zero base: only head), in repo, newest first. More than max commits,
// a base missing from repo or not reached from head, or a path from head
// that runs into the end of the fetched (shallow) history before meeting
// base's history return an error and no results: the range cannot be
// proven signed.
//
// The walk goes by committer time, as git rev-list base..head does; with
// clock skew it may report a commit reachable from base too (never the
// other way round).
func (v *Verifier) CheckRange(repo *git.Repository, base, head plumbing.Hash, max int) ([]Result, error) {
	commits, err := rangeCommits(repo, base, head, max)
	if err != nil {
		return nil, err
	}
	out := make([]Result, len(commits))
	for i, c := range commits {
		out[i] = v.Check(c)
	}
	return out, nil
}

const (
	fromHead uint8 = 1 << iota
	fromBase
)

// rangeCommits lists base..head, newest first.
func rangeCommits(repo *git.Repository, base, head plumbing.Hash, max int) ([]*object.Commit, error) {
	hc, err := repo.CommitObject(head)
	if err != nil {
		return nil, fmt.Errorf("head %s: %w", head, err)
	}
	if base.IsZero() {
		return []*object.Commit{hc}, nil
	}
	bc, err := repo.CommitObject(base)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: base %s is not in the fetched history (shallow clone?)", ErrBaseNotFound, base)
	}
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", base, err)
	}
	w := &walk{repo: repo, flags: map[plumbing.Hash]uint8{}, missing: map[plumbing.Hash]bool{}}
	w.push(hc, fromHead)
	w.push(bc, fromBase)
	var out []*object.Commit
	for w.interesting() {
		c := heap.Pop(&w.q).(*object.Commit)
		f := w.flags[c.Hash]
		if f&fromBase == 0 {
			out = append(out, c)
			if len(out) > max {
				return nil, fmt.Errorf("%w: more than %d commits between %s and %s", ErrTooManyCommits, max, base, head)
			}
		}
		if err := w.parents(c, f); err != nil {
			return nil, err
		}
	}
	if w.flags[base]&fromHead == 0 {
		return nil, fmt.Errorf("%w: base %s is not an ancestor of head %s within the fetched history", ErrBaseNotFound, base, head)
	}
	for h := range w.missing {
		if w.flags[h] == fromHead {
			return nil, fmt.Errorf("%w: the history of %s ends at the shallow boundary (%s) before meeting base %s", ErrBaseNotFound, head, h, base)
		}
	}
	kept := out[:0]
	for _, c := range out {
		if w.flags[c.Hash]&fromBase == 0 { // a later path from base marks it
			kept = append(kept, c)
		}
	}
	return kept, nil
}

// walk paints commits with the side (head, base) they are reachable from.
type walk struct {
	repo    *git.Repository
	q       commitQueue
	flags   map[plumbing.Hash]uint8
	queued  map[plumbing.Hash]bool
	missing map[plumbing.Hash]bool // parents beyond the fetched history
}

// push queues c (once) and adds flag to it.
func (w *walk) push(c *object.Commit, flag uint8) {
	w.flags[c.Hash] |= flag
	if w.queued == nil {
		w.queued = map[plumbing.Hash]bool{}
	}
	if !w.queued[c.Hash] {
		w.queued[c.Hash] = true
		heap.Push(&w.q, c)
	}
}

// parents passes c's flags to its parents.
func (w *walk) parents(c *object.Commit, f uint8) error {
	for _, p := range c.ParentHashes {
		if w.queued[p] || w.missing[p] {
			w.flags[p] |= f
			continue
		}
		pc, err := w.repo.CommitObject(p)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			w.missing[p] = true
			w.flags[p] |= f
			continue
		}
		if err != nil {
			return fmt.Errorf("parent %s of %s: %w", p, c.Hash, err)
		}
		w.push(pc, f)
	}
	return nil
}

// interesting reports whether some queued commit is not yet known to be
// reachable from base: the walk is done when none is.
func (w *walk) interesting() bool {
	for _, c := range w.q {
		if w.flags[c.Hash]&fromBase == 0 {
			return true
		}
	}
	return false
}

// commitQueue is a max-heap by committer time (newest first).
type commitQueue []*object.Commit

func (q commitQueue) Len() int { return len(q) }
func (q commitQueue) Less(i, j int) bool {
	return q[i].Committer.When.After(q[j].Committer.When)
}
func (q commitQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *commitQueue) Push(x any)   { *q = append(*q, x.(*object.Commit)) }
func (q *commitQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	*q = old[:len(old)-1]
	return c
}
