package vhdx

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"
)

// writeBehind writes payload data by direct I/O without making the writer
// wait for storage. Whole aligned writes are copied into one of a few
// chunk buffers; writes that follow each other in the file fill a chunk,
// and a full chunk (or one that the next write does not continue) goes to
// storage on a goroutine of its own while the writer goes on. So the page
// cache is never touched (no copy into it, no memory taken from it for
// replica data nobody reads back soon) and storage gets large writes, a few
// at a time.
//
// Nothing written behind is durable, or visible to reads through the
// buffered file, until drain returns: every read of the file, every write
// that does not go behind and every Sync drains first. The first error of
// a write behind is returned by every later call, so that a Sync after a
// lost write never succeeds.
type writeBehind struct {
	direct *directFile
	// fallback takes a write the file system refused by direct I/O
	// (EINVAL): the buffered file.
	fallback interface {
		WriteAt([]byte, int64) (int, error)
	}
	chunk int
	// writeAt writes one chunk (direct.writeAt; tests slow it down).
	writeAt func([]byte, int64) error

	mu      sync.Mutex // held by every method
	cur     *chunkBuf  // being filled; nil when none
	free    chan *chunkBuf
	made    int
	pending sync.WaitGroup
	flyMu   sync.Mutex
	flying  map[*chunkBuf]struct{} // on their way to storage
	errMu   sync.Mutex
	err     error // the first failure of a write behind
}

// chunkBuf is one chunk: data bytes to write at off.
type chunkBuf struct {
	buf []byte // chunk bytes, aligned for direct I/O
	off int64
	n   int
}

const (
	behindChunk  = 4 << 20 // bytes of one write behind
	behindChunks = 3       // one filling, two on their way to storage
)

// WriteBehindBytes is the most memory a disk opened with DirectWrites holds
// for writes on their way to storage (its chunks, made as they are needed).
const WriteBehindBytes = behindChunk * behindChunks

func newWriteBehind(direct *directFile, fallback interface {
	WriteAt([]byte, int64) (int, error)
}) *writeBehind {
	return &writeBehind{direct: direct, fallback: fallback, chunk: behindChunk, writeAt: direct.writeAt,
		free: make(chan *chunkBuf, behindChunks), flying: map[*chunkBuf]struct{}{}}
}

// write takes b for off if it can go behind (its offset and length meet the
// file's direct I/O alignment), and reports whether it did.
// A write that overlaps data still on its way first waits for it, so that
// the newer bytes land last.
func (w *writeBehind) write(b []byte, off int64) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failure(); err != nil {
		return false, err
	}
	if len(b) > w.chunk || !w.direct.fits(off, int64(len(b))) {
		return false, nil
	}
	if w.overlapsInFlight(off, int64(len(b))) {
		// b rewrites bytes still on their way: they land first.
		w.pending.Wait()
		if err := w.failure(); err != nil {
			return false, err
		}
	}
	if c := w.cur; c != nil && off == c.off+int64(c.n) && c.n+len(b) <= w.chunk {
		c.n += copy(c.buf[c.n:], b)
		if c.n == w.chunk {
			w.submit()
		}
		return true, nil
	}
	// Not the continuation of the chunk being filled: that one goes (and
	// first lands, if b rewrites some of it).
	overlapsCur := w.cur != nil && off < w.cur.off+int64(w.cur.n) && w.cur.off < off+int64(len(b))
	w.submit()
	if overlapsCur {
		w.pending.Wait()
		if err := w.failure(); err != nil {
			return false, err
		}
	}
	c := w.take()
	c.off, c.n = off, copy(c.buf, b)
	w.cur = c
	return true, nil
}

// drain sends the chunk being filled and waits until everything written
// behind is on storage (its fsync still to come) or failed.
func (w *writeBehind) drain() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.submit()
	w.pending.Wait()
	return w.failure()
}

// overlapsInFlight reports whether [off, off+n) overlaps a chunk on its way
// to storage.
func (w *writeBehind) overlapsInFlight(off, n int64) bool {
	w.flyMu.Lock()
	defer w.flyMu.Unlock()
	for c := range w.flying {
		if off < c.off+int64(c.n) && c.off < off+n {
			return true
		}
	}
	return false
}

// track adds c to the chunks on their way to storage, or removes it.
func (w *writeBehind) track(c *chunkBuf, on bool) {
	w.flyMu.Lock()
	defer w.flyMu.Unlock()
	if on {
		w.flying[c] = struct{}{}
	} else {
		delete(w.flying, c)
	}
}

// take returns a free chunk buffer, making one while fewer than
// behindChunks exist, else waiting for a write to finish.
func (w *writeBehind) take() *chunkBuf {
	select {
	case c := <-w.free:
		return c
	default:
	}
	if w.made < behindChunks {
		w.made++
		return &chunkBuf{buf: alignedBuffer(w.chunk, w.direct.memAlign)}
	}
	return <-w.free
}

// submit sends the chunk being filled to storage on a goroutine.
func (w *writeBehind) submit() {
	c := w.cur
	if c == nil {
		return
	}
	w.cur = nil
	w.pending.Add(1)
	w.track(c, true)
	go func() {
		defer w.pending.Done()
		err := w.writeAt(c.buf[:c.n], c.off)
		if errors.Is(err, syscall.EINVAL) {
			// The file system took the open but not this write.
			_, err = w.fallback.WriteAt(c.buf[:c.n], c.off)
		}
		if err != nil {
			w.errMu.Lock()
			if w.err == nil {
				w.err = fmt.Errorf("write of %d bytes at offset %d: %w", c.n, c.off, err)
			}
			w.errMu.Unlock()
		}
		w.track(c, false)
		w.free <- c
	}()
}

func (w *writeBehind) failure() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

// alignedBuffer returns n bytes whose address is a multiple of align.
func alignedBuffer(n int, align uintptr) []byte {
	if align == 0 {
		align = 1
	}
	b := make([]byte, n+int(align))
	skip := (align - uintptr(unsafe.Pointer(unsafe.SliceData(b)))%align) % align
	return b[skip : int(skip)+n : int(skip)+n]
}
