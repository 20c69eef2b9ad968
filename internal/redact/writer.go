package redact

import (
	"io"
	"sync"
)

// Writer masks secrets in a byte stream before passing it to an underlying
// writer, with the same result as [Redactor.Bytes] on the whole stream
// except that one masked run may come out as adjacent masks. A secret may
// be split across Write calls, and whether a short secret stands alone
// depends on the bytes around it, so the Writer holds back up to the
// longest secret's length plus one byte (more while a masked run is still
// growing) until more data arrives or Flush is called. Call Flush (or
// Close) when the stream ends, or the tail is lost.
//
// A Writer is safe for concurrent use; writes are serialized.
type Writer struct {
	r  *Redactor
	w  io.Writer
	mu sync.Mutex
	// buf holds ctx bytes already written (the left lookaround of what
	// follows), then the held-back bytes.
	buf []byte
	ctx int
}

// NewWriter returns a Writer that writes the redacted stream to w. With a nil
// or empty Redactor it passes data straight through.
func (r *Redactor) NewWriter(w io.Writer) *Writer {
	return &Writer{r: r, w: w}
}

// Write buffers p, writes out everything whose redaction is decided, and
// returns len(p) unless the underlying writer fails.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.r.Len() == 0 {
		return w.w.Write(p)
	}
	w.buf = append(w.buf, p...)
	if err := w.emit(false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// emit writes out the decided part of the held-back bytes, redacted; with
// end, all of them, the end of the buffer being the end of the text.
func (w *Writer) emit(end bool) error {
	buf := w.buf
	cut := len(buf)
	if !end {
		// An occurrence starting before cut ends, with its right
		// lookaround, inside buf.
		cut -= w.r.maxLen - 1 + lookaround
	}
	if cut <= w.ctx {
		return nil
	}
	var out []span
	for _, sp := range w.r.spans(buf, w.ctx) {
		if sp.lo >= cut {
			break
		}
		if sp.hi > cut {
			cut = sp.lo // hold back a run that crosses the cut
			break
		}
		out = append(out, span{sp.lo - w.ctx, sp.hi - w.ctx})
	}
	if cut <= w.ctx {
		return nil
	}
	if _, err := w.w.Write(apply(nil, buf[w.ctx:cut], out)); err != nil {
		return err
	}
	keep := max(0, cut-lookaround)
	w.buf = append(w.buf[:0], buf[keep:]...)
	w.ctx = cut - keep
	return nil
}

// Flush writes out the held-back tail, redacted, and ends the text: a later
// Write starts a new one (a short secret right after the flushed tail is
// taken to be at the start of a text).
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.r.Len() == 0 {
		return nil
	}
	err := w.emit(true)
	w.buf, w.ctx = w.buf[:0], 0
	return err
}

// Close flushes the tail. It does not close the underlying writer.
func (w *Writer) Close() error { return w.Flush() }
