package gitwatch

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/storage/filesystem"
)

// go-git indexes a fetched pack as it arrives, then resolves every object
// in memory, one whole object at a time. So before the pack reaches it,
// the pack is read here too: its object count, and the size of each
// object (for a delta, of the object it makes), against the limits.

// limitStorage is a repository storage whose pack writer checks the pack
// against the limits before go-git parses it.
type limitStorage struct {
	*filesystem.Storage
	l     *limiter
	drain bool // see packWriter
}

// PackfileWriter wraps the storage's pack writer (a fetch writes the
// whole pack through it).
func (s limitStorage) PackfileWriter() (io.WriteCloser, error) {
	w, err := s.Storage.PackfileWriter()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := scanPack(pr, s.l)
		pr.CloseWithError(errOr(err, errScanned))
		done <- err
	}()
	return &packWriter{WriteCloser: w, l: s.l, drain: s.drain, scan: pw, scanned: done}, nil
}

var errScanned = errors.New("pack already scanned")

func errOr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

const (
	// packHeaderLen is "PACK", a version and the object count, 4 bytes each.
	packHeaderLen = 12
	// packTrailerLen is the pack's SHA-1 checksum.
	packTrailerLen = 20
)

// packWriter passes a pack to go-git's pack writer after checking it: the
// object count from the header at once, each object's size as the
// scanner reaches it. The trailer is held back until the scanner has seen
// the whole pack, so go-git cannot finish reading the pack, and start
// resolving its objects, before every object is known to be within the
// limits.
//
// Once the pack is refused, a draining writer swallows the rest of the
// stream unwritten and reports the refusal at Close: git-upload-pack run
// for a local path blocks writing to a pipe nobody reads, and go-git
// waits for it to exit (remote transports just close the connection).
type packWriter struct {
	io.WriteCloser
	l       *limiter
	drain   bool
	header  []byte
	tail    []byte // the last packTrailerLen bytes, not yet passed on
	scan    *io.PipeWriter
	scanned chan error
	refused error
}

func (w *packWriter) Write(p []byte) (int, error) {
	if w.refused != nil {
		return w.discard(p, w.refused)
	}
	if len(w.header) < packHeaderLen {
		w.header = append(w.header, p[:min(packHeaderLen-len(w.header), len(p))]...)
		if len(w.header) == packHeaderLen {
			if err := w.l.objects(binary.BigEndian.Uint32(w.header[8:])); err != nil {
				return w.discard(p, err)
			}
		}
	}
	if _, err := w.scan.Write(p); err != nil && err != errScanned {
		return w.discard(p, err)
	}
	buf := append(w.tail, p...)
	pass := max(len(buf)-packTrailerLen, 0)
	if _, err := w.WriteCloser.Write(buf[:pass]); err != nil {
		if lerr := w.l.exceeded(); lerr != nil {
			return w.discard(p, lerr)
		}
		return 0, err
	}
	w.tail = append(w.tail[:0:0], buf[pass:]...)
	return len(p), nil
}

// discard refuses p, and all that follows, with err.
func (w *packWriter) discard(p []byte, err error) (int, error) {
	w.refused = err
	if w.drain {
		return len(p), nil
	}
	return 0, err
}

// Close waits for the scanner and, when it found the pack within the
// limits, passes the trailer on.
func (w *packWriter) Close() error {
	w.scan.Close()
	if err := <-w.scanned; err != nil && w.refused == nil {
		w.refused = err
	}
	if w.refused == nil {
		if _, err := w.WriteCloser.Write(w.tail); err != nil {
			w.refused = errOr(w.l.exceeded(), err)
		}
	}
	err := w.WriteCloser.Close()
	return errOr(w.refused, err)
}

// Pack object types that are deltas (git's pack format).
const (
	objOfsDelta = 6
	objRefDelta = 7
)

// scanPack reads a pack from r, failing with the limiter's error at the
// first object larger than maxObjectBytes, or with a format error. It
// reads r to its end.
func scanPack(r io.Reader, l *limiter) error {
	br := bufio.NewReaderSize(r, 64<<10)
	defer io.Copy(io.Discard, br)
	var hdr [packHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return packFormat(err)
	}
	if !bytes.Equal(hdr[:4], []byte("PACK")) {
		return packFormat(errors.New("no PACK signature"))
	}
	var zr io.ReadCloser
	for i := binary.BigEndian.Uint32(hdr[8:]); i > 0; i-- {
		typ, size, err := objectHeader(br)
		if err != nil {
			return packFormat(err)
		}
		switch typ {
		case objOfsDelta:
			err = skipVarint(br)
		case objRefDelta:
			_, err = br.Discard(20)
		}
		if err != nil {
			return packFormat(err)
		}
		if err := l.object(size); err != nil {
			return err
		}
		if zr == nil {
			zr, err = zlib.NewReader(br)
		} else {
			err = zr.(zlib.Resetter).Reset(br, nil)
		}
		if err != nil {
			return packFormat(err)
		}
		if typ == objOfsDelta || typ == objRefDelta {
			// A delta starts with the sizes of its base and of its result.
			zbr := bufio.NewReaderSize(zr, 16)
			_, err1 := binary.ReadUvarint(zbr)
			target, err2 := binary.ReadUvarint(zbr)
			if err := errors.Join(err1, err2); err != nil {
				return packFormat(err)
			}
			if err := l.object(int64(min(target, 1<<62))); err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, zbr)
		} else {
			_, err = io.Copy(io.Discard, zr)
		}
		if err != nil {
			return packFormat(err)
		}
	}
	return nil
}

func packFormat(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("gitwatch: read pack: %w", err)
}

// objectHeader reads an object's type and size: 3 bits of type and 4 of
// size in the first byte, then 7 bits of size a byte while the top bit is
// set.
func objectHeader(br *bufio.Reader) (typ byte, size int64, err error) {
	c, err := br.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	typ, size = (c>>4)&7, int64(c&15)
	for shift := 4; c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return 0, 0, errors.New("object size overflows")
		}
		if c, err = br.ReadByte(); err != nil {
			return 0, 0, err
		}
		size |= int64(c&0x7f) << shift
	}
	return typ, size, nil
}

// skipVarint skips an OFS_DELTA base offset: bytes while the top bit is set.
func skipVarint(br *bufio.Reader) error {
	for n := 0; ; n++ {
		c, err := br.ReadByte()
		if err != nil {
			return err
		}
		if c&0x80 == 0 {
			return nil
		}
		if n > 9 {
			return errors.New("delta offset overflows")
		}
	}
}
