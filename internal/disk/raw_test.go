package disk

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
)

func TestRawAllocatedFollowsHoles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.raw")
	r, err := CreateRaw(p, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 1<<20)
	if _, err := r.WriteAt(data, 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteAt(data[:4096], 40<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteAt(data, 64<<20); err == nil {
		t.Fatal("write past the end succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r, err = OpenRaw(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 64<<20 {
		t.Fatalf("size %d", r.Size())
	}
	ext := r.Allocated()
	covered := func(off, n int64) bool {
		for _, e := range ext {
			if e.Offset <= off && off+n <= e.End() {
				return true
			}
		}
		return false
	}
	if !covered(8<<20, 1<<20) || !covered(40<<20, 4096) {
		t.Fatalf("allocated %v misses written data", ext)
	}
	var total int64
	for _, e := range ext {
		total += e.Length
	}
	// On file systems with holes the extents are much smaller than the file.
	if total == 64<<20 {
		t.Logf("file system reports no holes; allocated is the whole file")
	}
	got := make([]byte, 1<<20)
	if _, err := r.ReadAt(got, 8<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	n, err := r.ReadAt(got, 64<<20-100)
	if n != 100 || err != io.EOF {
		t.Fatalf("read across the end: %d, %v", n, err)
	}
	if _, err := r.WriteAt(data[:1], 0); err == nil {
		t.Fatal("write to read-only image succeeded")
	}
	if _, err := CreateRaw(p, 1); err == nil {
		t.Fatal("CreateRaw over an existing file succeeded")
	}
}
