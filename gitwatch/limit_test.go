package gitwatch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// importTree makes main (replacing it) a single root commit holding the files files writes
// as fast-import "M" lines (git fast-import, fed as it is generated);
// mark :1 is the empty blob.
func (g *gitRepo) importTree(files func(w *bufio.Writer)) string {
	g.t.Helper()
	cmd := exec.Command("git", "fast-import", "--quiet", "--force", "--big-file-threshold=512k")
	cmd.Dir = g.dir
	in, err := cmd.StdinPipe()
	if err != nil {
		g.t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	w.WriteString("blob\nmark :1\ndata 0\n\n") // the empty blob, as :1
	fmt.Fprintf(w, "commit refs/heads/main\ncommitter Ada <ada@example.com> 1700000000 +0000\ndata 3\nbig\n")
	files(w)
	if err := w.Flush(); err != nil {
		g.t.Fatal(err)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		g.t.Fatalf("git fast-import: %v\n%s", err, stderr.String())
	}
	return g.git("rev-parse", "main")
}

// emptyFiles writes n empty files in directories of 1000; each directory
// has its own names, so its tree is a distinct object.
func emptyFiles(n int) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		w.WriteString("M 100644 :1 keep\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "M 100644 :1 d%04d/f%07d\n", i/1000, i)
		}
	}
}

// repeatTree makes main a commit of dirs directories that are all one
// tree of perDir empty files: dirs×perDir files in a few objects, made in
// a second instead of a minute.
func (g *gitRepo) repeatTree(dirs, perDir int) string {
	g.importTree(emptyFiles(perDir))
	sub := g.git("rev-parse", "main:d0000")
	return g.importTree(func(w *bufio.Writer) {
		w.WriteString("deleteall\n")
		for i := 0; i < dirs; i++ {
			fmt.Fprintf(w, "M 040000 %s d%04d\n", sub, i)
		}
	})
}

// distinctFiles writes n small files of distinct content: n blobs.
func distinctFiles(n int) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		for i := 0; i < n; i++ {
			c := fmt.Sprintf("%d\n", i)
			fmt.Fprintf(w, "M 100644 inline d%04d/f%07d\ndata %d\n%s\n", i/1000, i, len(c), c)
		}
	}
}

// randomFiles writes count files of size random (incompressible) bytes.
func randomFiles(count, size int) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		rng := rand.NewChaCha8([32]byte{1})
		for i := 0; i < count; i++ {
			fmt.Fprintf(w, "M 100644 inline r%04d.bin\ndata %d\n", i, size)
			io.CopyN(w, rng, int64(size))
			w.WriteString("\n")
		}
	}
}

// zeroFile writes one file of size zero bytes: a tiny pack, a big
// checkout.
func zeroFile(size int) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		fmt.Fprintf(w, "M 100644 inline zeros.bin\ndata %d\n", size)
		w.Write(make([]byte, size))
		w.WriteString("\n")
	}
}

// sameFile writes count paths to one file of size zero bytes.
func sameFile(count, size int) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		for i := 0; i < count; i++ {
			fmt.Fprintf(w, "M 100644 inline z%04d.bin\ndata %d\n", i, size)
			w.Write(make([]byte, size))
			w.WriteString("\n")
		}
	}
}

// dirSize is the total size of the regular files under dir; files that
// vanish while it walks are skipped.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// watchDisk samples dirSize(dir) until stop is called, which returns the
// largest size seen (sampled at least once more at the end).
func watchDisk(dir string) (stop func() int64) {
	var peak int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	sample := func() { peak = max(peak, dirSize(dir)) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				sample()
				return
			case <-time.After(20 * time.Millisecond):
				sample()
			}
		}
	}()
	return func() int64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// resetPeakRSS clears the process's VmHWM (Linux), so peakRSS reports
// the peak from here on; it reports whether that worked.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSS is the process's VmHWM in bytes, or 0 when unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(l, "VmHWM: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// maxRSS bounds the memory of a refused checkout: what the test process
// holds anyway, plus a little.
const maxRSS = 192 << 20

// tooLarge syncs src into a fresh cache and checks the result: ErrTooLarge
// naming want and the URL, nothing left in the cache, and at most
// maxDisk bytes on disk at any time, at most maxRSS in memory. It logs time, peak disk and peak RSS,
// and returns the Repo and the error.
func tooLarge(t *testing.T, src Source, want string, maxDisk int64) (*Repo, error) {
	t.Helper()
	cache := t.TempDir()
	r, err := Open(cache, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rssOK := resetPeakRSS()
	stop := watchDisk(cache)
	start := time.Now()
	rev, _, err := r.Sync(ctx)
	took := time.Since(start)
	peak := stop()
	rss := peakRSS()
	t.Logf("Sync took %v, peak disk %d bytes, peak RSS %d MiB (reset: %v): %v", took.Round(time.Millisecond), peak, rss>>20, rssOK, err)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Sync = %+v, %v; want ErrTooLarge", rev, err)
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), redactURL(src.URL)) {
		t.Errorf("error %q does not name %q and the URL", err, want)
	}
	if r.Current() != nil {
		t.Errorf("Current = %+v after a failed checkout", r.Current())
	}
	// The same head is not fetched again.
	start = time.Now()
	if _, _, again := r.Sync(ctx); again == nil || again.Error() != err.Error() {
		t.Errorf("second Sync = %v, want the same error", again)
	}
	t.Logf("the second Sync took %v", time.Since(start).Round(time.Millisecond))
	if ents, _ := os.ReadDir(cache); len(ents) != 0 {
		t.Errorf("the cache keeps %d entries after the failure (%s …)", len(ents), ents[0].Name())
	}
	if peak > maxDisk {
		t.Errorf("peak disk use %d bytes, want at most %d", peak, maxDisk)
	}
	if rssOK && rss > maxRSS {
		t.Errorf("peak RSS %d MiB, want at most %d MiB", rss>>20, maxRSS>>20)
	}
	return r, err
}

// The small cases run always; each limit is set low.

func TestRepo_TooManyFilesSmall(t *testing.T) {
	g := newGitRepo(t)
	g.importTree(emptyFiles(10))
	r, _ := tooLarge(t, Source{URL: g.dir, MaxFiles: 10}, "MaxFiles 10", 1<<20)
	// At the limit it is fine (10 files and "keep" is 11, so 11 is).
	r11, _ := Open(t.TempDir(), Source{URL: g.dir, MaxFiles: 11})
	if _, _, err := r11.Sync(context.Background()); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	// Once the branch moves to a smaller tree, the refused Repo takes it.
	g.git("reset", "-q", "--hard", "main")
	g.git("rm", "-q", "keep")
	sha := g.commit("d0000/f0000000", "now 10 files", "smaller")
	if rev, changed, err := r.Sync(context.Background()); err != nil || !changed || rev.SHA != sha {
		t.Fatalf("after the branch moved: %+v, %v, %v", rev, changed, err)
	}
}

func TestRepo_TooManyBytesSmall(t *testing.T) {
	g := newGitRepo(t)
	g.importTree(randomFiles(1, 200<<10))
	tooLarge(t, Source{URL: g.dir, MaxBytes: 100 << 10}, "MaxBytes 102400", 100<<10)
	r, _ := Open(t.TempDir(), Source{URL: g.dir, MaxBytes: 1 << 20})
	if _, _, err := r.Sync(context.Background()); err != nil {
		t.Fatalf("under the limit: %v", err)
	}
}

func TestRepo_TooLargeCheckoutSmall(t *testing.T) {
	g := newGitRepo(t)
	g.importTree(sameFile(8, 512<<10))
	tooLarge(t, Source{URL: g.dir, MaxBytes: 1 << 20}, "MaxBytes 1048576", 1<<20)
}

func TestRepo_TooLargeObjectSmall(t *testing.T) {
	g := newGitRepo(t)
	g.importTree(zeroFile(2 << 20))
	tooLarge(t, Source{URL: g.dir, MaxObjectBytes: 1 << 20}, "MaxObjectBytes 1048576", 1<<20)
	r, _ := Open(t.TempDir(), Source{URL: g.dir, MaxObjectBytes: 2 << 20})
	if _, _, err := r.Sync(context.Background()); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
}

func TestRepo_TooManyObjectsSmall(t *testing.T) {
	g := newGitRepo(t)
	g.importTree(distinctFiles(11_000))
	// 11,000 blobs, over 2×100+10,000 objects: refused from the pack
	// header, before the tree could be counted.
	tooLarge(t, Source{URL: g.dir, MaxFiles: 100}, "the pack holds", 1<<20)
}

// The heavy cases use the default limits.

func heavy(t *testing.T) {
	if testing.Short() {
		t.Skip("heavy: a big generated repository")
	}
}

// TestRepo_MillionFiles: a tree of 1,000,000 empty files (1,000
// directories of one tree of 1,000) is refused by counting the tree,
// before any file is written.
func TestRepo_MillionFiles(t *testing.T) {
	heavy(t)
	g := newGitRepo(t)
	g.repeatTree(1000, 1000)
	dirs, files := g.git("ls-tree", "main"), g.git("ls-tree", "main:d0999")
	if n := (strings.Count(dirs, "\n") + 1) * (strings.Count(files, "\n") + 1); n != 1_000_000 {
		t.Fatalf("the tree holds %d files", n)
	}
	tooLarge(t, Source{URL: g.dir}, fmt.Sprintf("MaxFiles %d", DefaultMaxFiles), 64<<20)
}

// TestRepo_ManyObjects: 300,000 distinct small files, a small pack of
// too many objects, refused from its header before it is parsed.
func TestRepo_ManyObjects(t *testing.T) {
	heavy(t)
	g := newGitRepo(t)
	g.importTree(distinctFiles(300_000))
	tooLarge(t, Source{URL: g.dir}, "the pack holds", 64<<20)
}

// TestRepo_ManyBytes: 320 MiB of random data, refused as the pack
// arrives, with at most DefaultMaxBytes on disk.
func TestRepo_ManyBytes(t *testing.T) {
	heavy(t)
	g := newGitRepo(t)
	g.git("config", "core.compression", "0") // random data does not compress: do not try
	g.importTree(randomFiles(320, 1<<20))
	tooLarge(t, Source{URL: g.dir}, fmt.Sprintf("MaxBytes %d", DefaultMaxBytes), DefaultMaxBytes)
}

// TestRepo_BigFile: a 64 MiB file of zeros packs small, but is refused as
// one object over MaxObjectBytes, before go-git reads it into memory.
func TestRepo_BigFile(t *testing.T) {
	heavy(t)
	g := newGitRepo(t)
	g.importTree(zeroFile(64 << 20))
	tooLarge(t, Source{URL: g.dir}, fmt.Sprintf("MaxObjectBytes %d", DefaultMaxObjectBytes), 1<<20)
}

// TestRepo_BigCheckout: 300 paths to one 1 MiB file of zeros pack in a
// few KiB but check out over MaxBytes.
func TestRepo_BigCheckout(t *testing.T) {
	heavy(t)
	g := newGitRepo(t)
	g.importTree(sameFile(300, 1<<20))
	tooLarge(t, Source{URL: g.dir}, fmt.Sprintf("MaxBytes %d", DefaultMaxBytes), DefaultMaxBytes)
}

// TestRepo_TooLargeOverHTTP: over smart HTTP the refused pack is not
// read to its end (the connection is dropped), and the server is left
// in a state to serve again.
func TestRepo_TooLargeOverHTTP(t *testing.T) {
	g := newGitRepo(t)
	g.importTree(randomFiles(4, 1<<20))
	var fetches atomic.Int32
	url := g.serveHTTP(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			fetches.Add(1)
		}
		return true
	})
	url = strings.Replace(url, "http://", "http://x:s3cret@", 1)
	_, err := tooLarge(t, Source{URL: url, MaxBytes: 1 << 20}, "MaxBytes 1048576", 1<<20)
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error shows the password: %v", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches for two Syncs of a refused head, want 1", n)
	}
	r, _ := Open(t.TempDir(), Source{URL: url})
	if _, _, err := r.Sync(context.Background()); err != nil {
		t.Fatalf("within the limits: %v", err)
	}
}
