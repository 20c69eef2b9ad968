package gitwatch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrTooLarge: a checkout went over one of the Source's limits (MaxBytes,
// MaxFiles, MaxObjectBytes). The partial checkout is removed; the same commit will fail
// again, so the caller should wait for a new one.
var ErrTooLarge = errors.New("git repository too large")

// Defaults for the limits of a Source, sized for a repository of
// deployment configuration.
const (
	DefaultMaxBytes       = 256 << 20
	DefaultMaxFiles       = 100_000
	DefaultMaxObjectBytes = 32 << 20
)

// A pack may hold packObjectsPerFile objects per file allowed in the
// tree, plus packObjectsSlack: room for the trees, commits and older file
// versions of HistoryDepth commits.
const (
	packObjectsPerFile = 2
	packObjectsSlack   = 10_000
)

// limiter counts what one checkout writes and keeps the first limit it
// went over.
type limiter struct {
	url      string
	maxBytes int64
	maxFiles int
	// maxObject bounds each object of the pack, as go-git holds a whole
	// object in memory to resolve it.
	maxObject int64
	// maxObjects bounds the objects of the downloaded pack: the parser
	// holds every one of them in memory.
	maxObjects uint32
	written    atomic.Int64
	mu         sync.Mutex
	err        error
}

func newLimiter(src Source) *limiter {
	l := &limiter{url: redactURL(src.URL), maxBytes: src.MaxBytes, maxFiles: src.MaxFiles, maxObject: src.MaxObjectBytes}
	if l.maxBytes <= 0 {
		l.maxBytes = DefaultMaxBytes
	}
	if l.maxObject <= 0 {
		l.maxObject = DefaultMaxObjectBytes
	}
	if l.maxFiles <= 0 {
		l.maxFiles = DefaultMaxFiles
	}
	l.maxObjects = uint32(min(packObjectsPerFile*l.maxFiles+packObjectsSlack, 1<<31))
	return l
}

// fail records err as the reason the checkout stopped (the first one
// wins) and returns it.
func (l *limiter) fail(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
	return l.err
}

// exceeded is the limit error recorded so far, or nil.
func (l *limiter) exceeded() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// write accounts for n more bytes, failing once the total is over
// maxBytes.
func (l *limiter) write(n int) error {
	if total := l.written.Add(int64(n)); total > l.maxBytes {
		return l.fail(fmt.Errorf("%w: %s: the pack and checkout reached %d bytes, over MaxBytes %d",
			ErrTooLarge, l.url, total, l.maxBytes))
	}
	return nil
}

// objects checks the object count announced by a pack's header.
func (l *limiter) objects(n uint32) error {
	if n > l.maxObjects {
		return l.fail(fmt.Errorf("%w: %s: the pack holds %d objects, over %d (%d per file of MaxFiles %d, plus %d)",
			ErrTooLarge, l.url, n, l.maxObjects, packObjectsPerFile, l.maxFiles, packObjectsSlack))
	}
	return nil
}

// object checks the size of one object of the pack.
func (l *limiter) object(size int64) error {
	if size > l.maxObject {
		return l.fail(fmt.Errorf("%w: %s: an object of %d bytes (a file, directory listing or commit), over MaxObjectBytes %d",
			ErrTooLarge, l.url, size, l.maxObject))
	}
	return nil
}

// countFiles counts the files of tree (blobs, symlinks and submodule
// entries at any depth), failing as soon as there are more than maxFiles.
// It reads tree objects only, never a blob.
func (l *limiter) countFiles(tree *object.Tree) (int, error) {
	w := object.NewTreeWalker(tree, true, nil)
	defer w.Close()
	n := 0
	for {
		_, e, err := w.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if e.Mode == filemode.Dir {
			continue
		}
		if n++; n > l.maxFiles {
			return n, l.fail(fmt.Errorf("%w: %s: the tree holds more than %d files, over MaxFiles %d",
				ErrTooLarge, l.url, l.maxFiles, l.maxFiles))
		}
	}
}

// limitFS is a billy.Filesystem that counts the bytes written through it
// (and through the filesystems it Chroots) against one limiter.
type limitFS struct {
	billy.Filesystem
	l *limiter
}

func (fs limitFS) wrap(f billy.File, err error) (billy.File, error) {
	if err != nil {
		return nil, err
	}
	return limitFile{File: f, l: fs.l}, nil
}

func (fs limitFS) Create(name string) (billy.File, error) {
	return fs.wrap(fs.Filesystem.Create(name))
}

func (fs limitFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	return fs.wrap(fs.Filesystem.OpenFile(name, flag, perm))
}

func (fs limitFS) TempFile(dir, prefix string) (billy.File, error) {
	return fs.wrap(fs.Filesystem.TempFile(dir, prefix))
}

func (fs limitFS) Chroot(path string) (billy.Filesystem, error) {
	sub, err := fs.Filesystem.Chroot(path)
	if err != nil {
		return nil, err
	}
	return limitFS{Filesystem: sub, l: fs.l}, nil
}

// Chmod keeps the underlying filesystem's support for file modes.
func (fs limitFS) Chmod(name string, mode os.FileMode) error {
	if c, ok := fs.Filesystem.(billy.Chmod); ok {
		return c.Chmod(name, mode)
	}
	return billy.ErrNotSupported
}

// limitFile fails a write that would take the total over the limit,
// before any of it reaches the disk.
type limitFile struct {
	billy.File
	l *limiter
}

func (f limitFile) Write(p []byte) (int, error) {
	if err := f.l.write(len(p)); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}
