package transfer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/replicator/replicator/internal/digest"
)

// memSums is how many digests the sender keeps in memory (16 MiB: a 1 TiB
// disk at 1 MiB blocks); larger tables go to a temporary file, so that
// memory stays bounded whatever the disk size.
var memSums int64 = 1 << 20

// digestTable is the digest table of the replica's newest complete point as
// the sender keeps it: in memory, or in a temporary file read through a
// small window. Never-written blocks (an all-zero Sum) are stored as the
// digest of zeros.
type digestTable struct {
	n   int64
	mem []digest.Sum

	f        *os.File
	mu       sync.Mutex
	win      []byte
	winStart int64 // index of the first digest in win
	winLen   int64 // digests in win
}

const sumWindow = 4096 // digests read from the file at once (64 KiB)

func (t *digestTable) Len() int64 { return t.n }

func (t *digestTable) At(i int64) digest.Sum {
	if t.f == nil {
		return t.mem[i]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i < t.winStart || i >= t.winStart+t.winLen {
		n, err := t.f.ReadAt(t.win, i*digest.Size)
		if n < digest.Size && err != nil {
			// The file was written by this process a moment ago; a read
			// failure makes the block look changed, which is safe.
			return digest.Sum{}
		}
		t.winStart, t.winLen = i, int64(n/digest.Size)
	}
	var s digest.Sum
	copy(s[:], t.win[(i-t.winStart)*digest.Size:])
	return s
}

func (t *digestTable) Close() error {
	if t.f == nil {
		return nil
	}
	name := t.f.Name()
	err := t.f.Close()
	os.Remove(name)
	return err
}

// readSums reads count digests in 'S' messages. It keeps the first keep of
// them (the blocks of this disk), in memory or spilled to a file in tempDir.
func readSums(br *bufio.Reader, conn interface{ SetReadDeadline(time.Time) error }, count, keep, size, bs int64, idle time.Duration, tempDir string) (*digestTable, error) {
	t := &digestTable{n: keep}
	var fw *bufio.Writer
	if keep > memSums {
		f, err := os.CreateTemp(tempDir, "replicator-digests-*")
		if err != nil {
			return nil, fmt.Errorf("digest table of %d blocks: %w", keep, err)
		}
		t.f, t.win = f, make([]byte, sumWindow*digest.Size)
		t.winLen = 0
		fw = bufio.NewWriterSize(f, 256<<10)
	} else {
		t.mem = make([]digest.Sum, keep)
	}
	fail := func(err error) (*digestTable, error) {
		t.Close()
		return nil, err
	}
	zeroFull, last := digest.Zero(int(min(bs, size))), (size-1)/bs
	zeroLast := digest.Zero(int(size - last*bs))
	buf := make([]byte, 0, sumsPerMessage*digest.Size)
	for got := int64(0); got < count; {
		conn.SetReadDeadline(time.Now().Add(idle))
		typ, n, err := readHeader(br)
		if err != nil {
			return fail(fmt.Errorf("read digests: %w", err))
		}
		if typ != msgSums || n == 0 || n%digest.Size != 0 || int64(n/digest.Size) > count-got {
			return fail(fmt.Errorf("read digests: message %q of %d bytes after %d of %d digests", typ, n, got, count))
		}
		body, err := readBody(br, buf, n, sumsPerMessage*digest.Size, "digests")
		if err != nil {
			return fail(fmt.Errorf("read digests: %w", err))
		}
		for ; len(body) > 0; body, got = body[digest.Size:], got+1 {
			if got >= keep {
				continue
			}
			var s digest.Sum
			copy(s[:], body)
			if s == (digest.Sum{}) { // never written: zeros on the replica
				s = zeroFull
				if got == last {
					s = zeroLast
				}
			}
			if fw == nil {
				t.mem[got] = s
			} else if _, err := fw.Write(s[:]); err != nil {
				return fail(fmt.Errorf("spill digests to %s: %w", t.f.Name(), err))
			}
		}
	}
	if fw != nil {
		if err := fw.Flush(); err != nil {
			return fail(fmt.Errorf("spill digests to %s: %w", t.f.Name(), err))
		}
	}
	return t, nil
}

var _ io.Closer = (*digestTable)(nil)
