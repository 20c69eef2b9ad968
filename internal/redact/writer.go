package redact

import (
	"io"
	"sync"
)

// Writer masks secrets in a byte stream before passing it to an underlying
// writer. A secret may be split across Write calls, so the Writer holds back
// up to (longest secret - 1) bytes, plus any partly matched run, until more
// data arrives or Flush is called. Call Flush (or Close) when the stream ends,
// or the tail is lost.
//
// A Writer is safe for concurrent use; writes are serialized.
type Writer struct {
	r       *Redactor
	w       io.Writer
	mu      sync.Mutex
	pending []byte
}

// NewWriter returns a Writer that writes the redacted stream to w. With a nil
// or empty Redactor it passes data straight through.
func (r *Redactor) NewWriter(w io.Writer) *Writer {
	return &Writer{r: r, w: w}
}

// Write buffers p, writes out everything that can no longer be part of a
// secret, and returns len(p) unless the underlying writer fails.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.r == nil || len(w.r.secrets) == 0 {
		return w.w.Write(p)
	}
	w.pending = append(w.pending, p...)
	buf := w.pending
	// Any occurrence not yet fully inside buf starts at or after cut.
	cut := len(buf) - (w.r.maxLen - 1)
	if cut <= 0 {
		return len(p), nil
	}
	spans := w.r.spans(buf)
	var emit []span
	for _, sp := range spans {
		if sp.lo >= cut {
			break
		}
		if sp.hi > cut {
			cut = sp.lo // hold back a run that crosses the cut
			break
		}
		emit = append(emit, sp)
	}
	if cut > 0 {
		if _, err := w.w.Write(apply(nil, buf[:cut], emit)); err != nil {
			return 0, err
		}
		w.pending = append(w.pending[:0], buf[cut:]...)
	}
	return len(p), nil
}

// Flush writes out the held-back tail, redacted.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return nil
	}
	out := w.r.Bytes(w.pending)
	_, err := w.w.Write(out)
	w.pending = w.pending[:0]
	return err
}

// Close flushes the tail. It does not close the underlying writer.
func (w *Writer) Close() error { return w.Flush() }
