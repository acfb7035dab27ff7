package vhdx

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/replicator/replicator/internal/testkit"
)

// residentPages counts the pages of path's [off, off+n) that are in the page
// cache (mincore(2) over a shared read-only mapping).
func residentPages(t *testing.T, path string, off, n int64) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+int64(os.Getpagesize())-1)/int64(os.Getpagesize()))
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore %s: %v", path, e)
	}
	in := 0
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in
}

// Whole blocks written to a replica on a file system with direct I/O go to
// storage without passing through the page cache (the agent's CPU is not
// spent copying them there, and the cache is not filled with replica data
// nobody reads); writes of other shapes into the same blocks still land,
// read back through the open disk, a reopened one and qemu-img alike.
func TestDirectWritesSkipThePageCache(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.vhdx")
	const size, block = 16 << 20, 1 << 20
	d, err := Create(path, CreateOptions{Size: size, BlockSize: block})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, err = OpenWith(path, OpenOptions{Writable: true, DirectWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.behind == nil {
		testkit.Precondition(t, "%s: the file system offers no direct I/O (statx STATX_DIOALIGN); the test needs one that does, such as ext4", dir)
		return
	}
	model := make([]byte, size)
	for i := range model[:8*block] {
		model[i] = byte(i*31 + i>>11)
	}
	// Blocks 0-7 whole, as the agent writes them.
	buf := make([]byte, block) // a large allocation: page-aligned
	for b := int64(0); b < 8; b++ {
		copy(buf, model[b*block:(b+1)*block])
		if _, err := d.WriteAt(buf, b*block); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	off := d.bat[d.geo.payloadIndex(0)] >> 20 << 20
	if n := residentPages(t, path, int64(off), block); n != 0 {
		t.Fatalf("%d pages of block 0's payload are in the page cache after a whole-block write", n)
	}
	// Other shapes into blocks already written and into new ones: an
	// unaligned run across two blocks, a sector-aligned piece, an odd length.
	for _, w := range []struct{ off, n int64 }{{3*block + 100, block}, {9*block + 512, 4096}, {12*block - 7, 3}} {
		for i := range w.n {
			model[w.off+i] ^= 0x5a
		}
		if _, err := d.WriteAt(bytes.Clone(model[w.off:w.off+w.n]), w.off); err != nil {
			t.Fatal(err)
		}
	}
	// A whole block direct again over one the page cache now holds parts of.
	for i := range int64(block) {
		model[3*block+i] += 1
	}
	copy(buf, model[3*block:4*block])
	if _, err := d.WriteAt(buf, 3*block); err != nil {
		t.Fatal(err)
	}
	requireDiskHolds(t, d, path, model)
}

// requireDiskHolds checks that the open disk d at path holds model: read
// through d itself, then closed (which drains and syncs) and read by a
// reopened disk and by qemu-img.
func requireDiskHolds(t *testing.T, d *Disk, path string, model []byte) {
	t.Helper()
	got := make([]byte, len(model))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	requireSame(t, "read through the disk being written", got, model)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	requireSame(t, "read by a reopened disk", readAll(t, mustOpen(t, path), 1<<20), model)
	qemuCheck(t, path, model)
}

// openBehind creates a disk of size bytes and opens it for writing with a
// write-behind (the test needs a file system with direct I/O).
func openBehind(t *testing.T, size int64) (*Disk, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "d.vhdx")
	d, err := Create(path, CreateOptions{Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, err = OpenWith(path, OpenOptions{Writable: true, DirectWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.behind == nil {
		d.Close()
		testkit.Precondition(t, "%s: the file system offers no direct I/O (statx STATX_DIOALIGN); the test needs one that does, such as ext4", dir)
	}
	return d, path
}

// Writes behind land in the order they were made, whatever their shape:
// random whole blocks, rewrites of blocks still on their way, unaligned
// pieces over them, reads in between and syncs at random points leave the
// disk equal to a model of the writes, read back by this disk, a reopened
// one and qemu-img.
func TestWritesBehindLandInOrder(t *testing.T) {
	const size, block = 24 << 20, 1 << 20
	d, path := openBehind(t, size)
	if d == nil {
		return
	}
	defer d.Close()
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 11))
	buf := make([]byte, 4*block+1)[1:] // at an odd address: the bytes are copied before they go
	for i := range 600 {
		var off, n int64
		switch rng.IntN(4) {
		case 0, 1: // one or a few whole blocks, often the next ones
			n = block * int64(1+rng.IntN(3))
			off = block * rng.Int64N((size-n)/block+1)
		case 2: // sector-aligned pieces
			n = 512 * int64(1+rng.IntN(64))
			off = 512 * rng.Int64N((size-n)/512)
		default: // any bytes
			n = int64(1 + rng.IntN(9000))
			off = rng.Int64N(size - n)
		}
		p := buf[:n]
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		copy(model[off:], p)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		switch rng.IntN(20) {
		case 0:
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		case 1:
			roff := rng.Int64N(size - block)
			got := make([]byte, block)
			if _, err := d.ReadAt(got, roff); err != nil {
				t.Fatal(err)
			}
			requireSame(t, name("read after write %d at %d", i, roff), got, model[roff:roff+block])
		}
	}
	requireDiskHolds(t, d, path, model)
}

// A write behind that storage refuses is not forgotten: the Sync after it
// fails, and so does every write and Close after it, so that no position
// is ever acknowledged over bytes that are not in the file.
func TestAFailedWriteBehindFailsTheSync(t *testing.T) {
	d, _ := openBehind(t, 8<<20)
	if d == nil {
		return
	}
	b := alignedBuffer(1<<20, 4096)
	for i := range b {
		b[i] = byte(i)
	}
	if _, err := d.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	// Storage goes away under the direct descriptor.
	d.behind.direct.f.Close()
	if _, err := d.WriteAt(b, 1<<20); err != nil {
		t.Fatalf("a write behind failed at once: %v (it should fail at the drain)", err)
	}
	err := d.Sync()
	if err == nil || !strings.Contains(err.Error(), "write of 1048576 bytes at offset") {
		t.Fatalf("sync after a lost write behind: %v", err)
	}
	if _, err := d.WriteAt(b, 2<<20); err == nil {
		t.Fatal("a write after a lost write behind succeeded")
	}
	if err := d.Close(); err == nil {
		t.Fatal("close after a lost write behind succeeded")
	}
}

// A rewrite of bytes still on their way to storage lands after them, even
// when the first write is slow: the newest bytes are what the disk holds.
func TestARewriteWaitsForTheWriteBehindItOverlaps(t *testing.T) {
	const block = 1 << 20
	d, path := openBehind(t, 8<<20)
	if d == nil {
		return
	}
	defer d.Close()
	slow := d.behind.writeAt
	var later atomic.Bool
	d.behind.writeAt = func(b []byte, off int64) error {
		if !later.Swap(true) {
			time.Sleep(300 * time.Millisecond)
		}
		return slow(b, off)
	}
	a, b := alignedBuffer(block, 4096), alignedBuffer(block, 4096)
	for i := range a {
		a[i], b[i] = 0xaa, 0xbb
	}
	if _, err := d.WriteAt(a, 0); err != nil { // fills a chunk
		t.Fatal(err)
	}
	if _, err := d.WriteAt(b, 5*block); err != nil { // sends it: the slow write
		t.Fatal(err)
	}
	if _, err := d.WriteAt(b, 0); err != nil { // rewrites what is on its way
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8<<20)
	copy(want, b)
	copy(want[5*block:], b)
	requireSame(t, "disk after a rewrite of a slow write behind", readAll(t, mustOpen(t, path), block), want)
}

// procsAtStart is GOMAXPROCS before any test opened a direct file.
var procsAtStart = runtime.GOMAXPROCS(0)

// The first direct file of a process adds one P, and only the first: a
// goroutine asleep in a direct write keeps its P, and without the spare one a
// core waits while the agent's and the proxy's goroutines are ready to run.
// GOMAXPROCS set in the environment is left as it is.
func TestDirectWritesAddOneSpareProc(t *testing.T) {
	want := procsAtStart + 1
	if os.Getenv("GOMAXPROCS") != "" {
		want = procsAtStart
	}
	for range 2 {
		d, _ := openBehind(t, 4<<20)
		d.Close()
	}
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("GOMAXPROCS = %d after opening direct files, want %d (it was %d before)", got, want, procsAtStart)
	}

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "3")
	before := runtime.GOMAXPROCS(0)
	addSpareProc()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS = %d with GOMAXPROCS=3 in the environment, want it left at %d", got, before)
	}
}

// Payload written behind keeps the crash guarantees of the buffered path:
// TestCrashConsistency's rounds, with every aligned payload write going
// behind in small chunks that land on the journaling file from goroutines
// of their own, out of order, after delays that vary. A Sync that returned
// before its writes behind had landed would show as synced bytes lost.
func TestCrashConsistencyWithWritesBehind(t *testing.T) {
	crashConsistency(t, func(t *testing.T, d *Disk, mem *memFile) {
		null, err := os.Open(os.DevNull) // closed with the disk
		if err != nil {
			t.Fatal(err)
		}
		w := newWriteBehind(&directFile{f: null, memAlign: 4096, offAlign: 512}, mem)
		w.chunk = 64 << 10
		var n atomic.Int64
		w.writeAt = func(b []byte, off int64) error {
			time.Sleep(time.Duration(n.Add(1)%5) * 200 * time.Microsecond)
			_, err := mem.WriteAt(b, off)
			return err
		}
		d.behind = w
		t.Cleanup(func() {
			if n.Load() == 0 {
				t.Error("no payload write went behind")
			}
		})
	})
}
