package vhdx

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// memFile is a file in memory that journals every mutation and every Sync,
// so that tests can rebuild what a disk could hold after a power loss at any
// point: everything before the last completed Sync, plus any subset of what
// came after it. That is what fsync promises and no more: POSIX fsync()
// ("all data for the open file descriptor ... is to be transferred to the
// storage device"; nothing is said of unsynced writes or their order) and
// Linux fsync(2), which also covers writes made through another descriptor
// of the same file (the direct one of the writes behind), since it flushes
// the file's inode, not the descriptor's writes.
type memFile struct {
	mu   sync.Mutex // writes behind reach the file from goroutines of their own
	data []byte
	ops  []memOp
}

type memOp struct {
	off      int64
	data     []byte
	truncate int64 // >= 0: a Truncate to this size
	barrier  bool
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops = append(m.ops, memOp{off: off, data: append([]byte(nil), p...), truncate: -1})
	m.data = applyOp(m.data, m.ops[len(m.ops)-1])
	return len(p), nil
}

func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops = append(m.ops, memOp{truncate: n})
	m.data = applyOp(m.data, m.ops[len(m.ops)-1])
	return nil
}

func (m *memFile) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops = append(m.ops, memOp{barrier: true, truncate: -1})
	return nil
}
func (m *memFile) Close() error { return nil }
func (m *memFile) Stat() (os.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return memInfo(len(m.data)), nil
}

type memInfo int64

func (i memInfo) Name() string       { return "mem" }
func (i memInfo) Size() int64        { return int64(i) }
func (i memInfo) Mode() os.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

func applyOp(b []byte, o memOp) []byte {
	switch {
	case o.barrier:
	case o.truncate >= 0:
		if o.truncate <= int64(len(b)) {
			b = b[:o.truncate]
		} else {
			b = append(b, make([]byte, o.truncate-int64(len(b)))...)
		}
	default:
		if end := o.off + int64(len(o.data)); end > int64(len(b)) {
			b = append(b, make([]byte, end-int64(len(b)))...)
		}
		copy(b[o.off:], o.data)
	}
	return b
}

// crashImage is the file after a power loss once ops[:k] were issued: all
// ops up to the last barrier, then a random subset of the rest.
func crashImage(start []byte, ops []memOp, k int, rng *rand.Rand) []byte {
	b := append([]byte(nil), start...)
	last := 0
	for i := 0; i < k; i++ {
		if ops[i].barrier {
			last = i + 1
		}
	}
	for i := 0; i < k; i++ {
		if i < last || rng.Intn(2) == 0 {
			b = applyOp(b, ops[i])
		}
	}
	return b
}

// TestCrashConsistency writes rounds of sector-aligned writes, each ended by
// Sync (the last one not), then rebuilds the file as a power loss at every
// point could leave it. The file must always open, bytes of synced rounds
// must be intact, and each sector of the round in flight must hold either
// its old or its new content.
func TestCrashConsistency(t *testing.T) { crashConsistency(t, nil) }

// crashConsistency is TestCrashConsistency; attach, if not nil, is called on
// the disk written to the journaling file before the writes start.
func crashConsistency(t *testing.T, attach func(*testing.T, *Disk, *memFile)) {
	for _, child := range []bool{false, true} {
		t.Run(name("child=%v", child), func(t *testing.T) {
			dir := t.TempDir()
			size := int64(6<<20 + 4096)
			ss := int64(512)
			rng := rand.New(rand.NewSource(77))
			model := make([]byte, size)
			path := filepath.Join(dir, "base.vhdx")
			d, err := Create(path, CreateOptions{Size: size, BlockSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if child {
				applyWrites(t, d, model, randomWrites(rng, size, 10, 1<<20))
				d.Close()
				path = filepath.Join(dir, "child.vhdx")
				if d, err = CreateDifferencing(path, filepath.Join(dir, "base.vhdx"), CreateOptions{BlockSize: 1 << 20}); err != nil {
					t.Fatal(err)
				}
			}
			d.Close()
			start, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			mem := &memFile{data: append([]byte(nil), start...)}
			d, err = openOn(path, mem, true)
			if err != nil {
				t.Fatal(err)
			}
			if attach != nil {
				attach(t, d, mem)
			}
			type round struct {
				before  []byte // model when the round starts
				writes  []write
				syncEnd int // ops issued when its Sync returned; -1: never synced
			}
			var rounds []round
			for r := 0; r < 4; r++ {
				rd := round{before: append([]byte(nil), model...), syncEnd: -1}
				taken := map[int64]bool{}
				for i := 0; i < 12; i++ {
					n := (1 + rng.Int63n(600)) * ss
					off := rng.Int63n((size-n)/ss) * ss
					free := true
					for s := off; s < off+n; s += ss {
						free = free && !taken[s]
					}
					if !free {
						continue
					}
					for s := off; s < off+n; s += ss {
						taken[s] = true
					}
					b := make([]byte, n)
					rng.Read(b)
					rd.writes = append(rd.writes, write{off, b})
				}
				applyWrites(t, d, model, rd.writes)
				if r < 3 {
					if err := d.Sync(); err != nil {
						t.Fatal(err)
					}
					rd.syncEnd = len(mem.ops)
				}
				rounds = append(rounds, rd)
			}
			if d.behind != nil {
				// The last round's writes behind reach the file (unsynced,
				// so any of them may still be lost) before it is read.
				d.behind.drain()
			}
			final := append([]byte(nil), model...)
			var parent *Disk
			if child {
				parent = mustOpen(t, filepath.Join(dir, "base.vhdx"))
				defer parent.Close()
			}
			for trial := 0; trial < 100; trial++ {
				k := rng.Intn(len(mem.ops) + 1)
				if trial == 0 {
					k = len(mem.ops)
				}
				img := crashImage(start, mem.ops, k, rng)
				// The round in flight is the first whose Sync had not returned.
				cur := 0
				for cur < len(rounds) && rounds[cur].syncEnd >= 0 && rounds[cur].syncEnd <= k {
					cur++
				}
				var old, next []byte
				var pending []write
				if cur < len(rounds) {
					old, pending = rounds[cur].before, rounds[cur].writes
					if cur+1 < len(rounds) {
						next = rounds[cur+1].before
					} else {
						next = final
					}
				} else {
					old, next = final, final
				}
				c, err := openOn(path, &memFile{data: img}, false)
				if err != nil {
					t.Fatalf("trial %d (crash after op %d of %d): open: %v", trial, k, len(mem.ops), err)
				}
				if child {
					if err := c.checkParent(parent, false); err != nil {
						t.Fatalf("trial %d: %v", trial, err)
					}
					c.parent = parent
				}
				got := readAll(t, c, 1<<20)
				c.parent = nil
				c.Close()
				inFlight := map[int64]bool{}
				for _, w := range pending {
					for s := w.off; s < w.off+int64(len(w.data)); s += ss {
						inFlight[s] = true
					}
				}
				for s := int64(0); s < size; s += ss {
					g := got[s : s+ss]
					if bytes.Equal(g, old[s:s+ss]) || (inFlight[s] && bytes.Equal(g, next[s:s+ss])) {
						continue
					}
					t.Fatalf("trial %d (crash after op %d of %d, round %d): sector at %d holds neither old nor new data", trial, k, len(mem.ops), cur, s)
				}
			}
		})
	}
}

// A power loss anywhere in SetParent leaves a file that opens with either
// the old or the new parent locator, never a mix.
func TestSetParentCrash(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, 4<<20, 512, 2, 51)
	start, err := os.ReadFile(paths[2])
	if err != nil {
		t.Fatal(err)
	}
	before := mustOpen(t, paths[2])
	oldLoc := before.ParentLocator()
	before.Close()
	mem := &memFile{data: append([]byte(nil), start...)}
	d, err := openOn(paths[2], mem, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.setParent(paths[0]); err != nil {
		t.Fatal(err)
	}
	newLoc := d.ParentLocator()
	if newLoc["relative_path"] == oldLoc["relative_path"] {
		t.Fatalf("locator unchanged: %v", newLoc)
	}
	rng := rand.New(rand.NewSource(3))
	seenOld, seenNew := false, false
	for k := 0; k <= len(mem.ops); k++ {
		for rep := 0; rep < 3; rep++ {
			img := crashImage(start, mem.ops, k, rng)
			c, err := openOn(paths[2], &memFile{data: img}, false)
			if err != nil {
				t.Fatalf("crash after op %d of %d: %v", k, len(mem.ops), err)
			}
			got := c.ParentLocator()
			switch {
			case equalMaps(got, oldLoc):
				seenOld = true
			case equalMaps(got, newLoc):
				seenNew = true
			default:
				t.Fatalf("crash after op %d of %d: locator %v is neither old nor new", k, len(mem.ops), got)
			}
		}
	}
	if !seenOld || !seenNew {
		t.Fatalf("crash points covered old=%v new=%v", seenOld, seenNew)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
