package transfer_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
	"github.com/replicator/replicator/internal/zeros"
)

// rewrite copies the bytes of src, lets edit change them and writes them
// to a new file named name, whose path it returns.
func rewrite(t *testing.T, src source, name string, edit func(b []byte)) string {
	t.Helper()
	b, err := os.ReadFile(src.path)
	if err != nil {
		t.Fatal(err)
	}
	edit(b)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// changeSource copies src to a new file, applies writes (nil data punches
// the block: zeros and unallocated) and returns the new source.
func changeSource(t *testing.T, src source, bs int64, writes map[int64][]byte) source {
	t.Helper()
	allocated := make([]bool, (src.size+bs-1)/bs)
	for blk := range blockplan.Full(src.size, bs, src.allocated) {
		allocated[blk.Index] = true
	}
	path := rewrite(t, src, "changed.img", func(b []byte) {
		for idx, data := range writes {
			off := idx * bs
			end := min(off+bs, src.size)
			if data == nil {
				clear(b[off:end])
				allocated[idx] = false
				continue
			}
			copy(b[off:end], data)
			allocated[idx] = true
		}
	})
	var ext []disk.Extent
	for i, a := range allocated {
		if !a {
			continue
		}
		off := int64(i) * bs
		n := min(bs, src.size-off)
		if l := len(ext); l > 0 && ext[l-1].End() == off {
			ext[l-1].Length += n
		} else {
			ext = append(ext, disk.Extent{Offset: off, Length: n})
		}
	}
	return source{path: path, size: src.size, allocated: ext}
}

func fill(n int64, c byte) []byte { return bytes.Repeat([]byte{c}, int(n)) }

// firstBlocks returns the indexes of the first n blocks of src that are
// allocated (want true) or not, and not zero.
func pickBlocks(t *testing.T, src source, bs int64, allocated bool, n int) []int64 {
	t.Helper()
	data, _ := os.ReadFile(src.path)
	inPlan := map[int64]bool{}
	for b := range blockplan.Full(src.size, bs, src.allocated) {
		inPlan[b.Index] = true
	}
	var out []int64
	for i := int64(0); i*bs < src.size-bs && len(out) < n; i++ {
		if inPlan[i] == allocated && (!allocated || !zeros.All(data[i*bs:(i+1)*bs])) {
			out = append(out, i)
		}
	}
	if len(out) < n {
		t.Fatalf("source has fewer than %d such blocks", n)
	}
	return out
}

// TestDigestModeSendsOnlyDifferingBlocks: after a full copy, a digest-mode
// transfer of a changed source sends exactly the blocks that differ,
// including a block that became unallocated (sent as zeros).
func TestDigestModeSendsOnlyDifferingBlocks(t *testing.T) {
	t.Run("in memory", digestMode)
	t.Run("spilled to a file", func(t *testing.T) {
		defer transfer.SetMemSums(5)()
		digestMode(t)
	})
}

func digestMode(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 8<<20+3000, bs, 21)
	target := &transfertest.Target{Dir: t.TempDir()}
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	s := &transfer.Sender{Address: addr, TLS: client}
	target.Begin(testJob, testVM, testCP)
	opts := options(bs)
	opts.CompareDigests = true // no digests yet: a full copy
	opts.TempDir = t.TempDir()
	res, err := s.SendDisk(context.Background(), src.open(t), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.DigestsCompared {
		t.Fatal("digests compared on the first copy")
	}

	alloc := pickBlocks(t, src, bs, true, 4)
	holes := pickBlocks(t, src, bs, false, 1)
	last := (src.size - 1) / bs
	writes := map[int64][]byte{
		alloc[0]: fill(bs, 0xa1),
		alloc[1]: fill(bs, 0xb2),
		alloc[2]: nil,                          // trimmed in the guest: zeros, unallocated
		alloc[3]: make([]byte, bs),             // overwritten with zeros, still allocated
		holes[0]: fill(bs, 0xc3),               // new data where there was none
		last:     fill(src.size-last*bs, 0xd4), // the short last block
	}
	changed := changeSource(t, src, bs, writes)
	opts.CheckpointID = "cp-2"
	target.Begin(testJob, testVM, "cp-2")
	res, err = s.SendDisk(context.Background(), changed.open(t), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DigestsCompared {
		t.Fatal("digests not compared")
	}
	if res.BlocksChanged != int64(len(writes)) || res.BlocksZero != 2 {
		t.Fatalf("%d blocks changed (%d zero), want %d (2 zero): %+v", res.BlocksChanged, res.BlocksZero, len(writes), res)
	}
	h := hello(src.size, bs)
	h.CheckpointID = "cp-2"
	checkReplica(t, target, h, expected(t, changed.path, nil), blockplan.All(src.size, bs))
	if left, _ := os.ReadDir(opts.TempDir); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestExcludedRangesZeroedAndDropped(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	size := int64(20*bs + 100)
	if err := os.WriteFile(path, fill(size, 0x5a), 0o644); err != nil {
		t.Fatal(err)
	}
	src := source{path: path, size: size, allocated: []disk.Extent{{Offset: 0, Length: size}}}
	excluded := []disk.Extent{
		{Offset: 3 * bs, Length: 3 * bs},   // blocks 3, 4, 5 wholly
		{Offset: 8*bs + 100, Length: 4900}, // inside block 8
		{Offset: 10*bs + bs/2, Length: bs}, // end of 10, start of 11
		{Offset: 4 * bs, Length: bs + 10},  // overlaps the first
		{Offset: 20 * bs, Length: 1 << 40}, // the short last block, past the end
	}
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	opts := options(bs)
	opts.Compression = codec.High
	res, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, excluded, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.BlocksExcluded != 4 || res.BlocksChanged != 17 {
		t.Fatalf("%d blocks excluded, %d sent; want 4 and 17", res.BlocksExcluded, res.BlocksChanged)
	}
	want := expected(t, path, excluded)
	got, _ := os.ReadFile(target.Path(hello(size, bs), "img"))
	if !bytes.Equal(got, want) {
		t.Fatal("replica is not the source with the excluded ranges zeroed")
	}
	var plan []blockplan.Block
	for b := range blockplan.All(size, bs) {
		if b.Index < 3 || b.Index > 5 && b.Index < 20 {
			plan = append(plan, b)
		}
	}
	checkReplica(t, target, hello(size, bs), want, func(yield func(blockplan.Block) bool) {
		for _, b := range plan {
			if !yield(b) {
				return
			}
		}
	})
}

// TestChangedPlanZeroesUnallocated: with change tracking, a changed block
// that is no longer allocated reaches the replica as zeros, unread.
func TestChangedPlanZeroesUnallocated(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 4<<20, bs, 8)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	s := &transfer.Sender{Address: addr, TLS: client}
	if _, err := s.SendDisk(context.Background(), src.open(t), nil, nil, options(bs), nil); err != nil {
		t.Fatal(err)
	}
	blocks := pickBlocks(t, src, bs, true, 2)
	changed := changeSource(t, src, bs, map[int64][]byte{blocks[0]: nil, blocks[1]: fill(bs, 0x77)})
	target.Begin(testJob, testVM, "cp-2")
	opts := options(bs)
	opts.CheckpointID = "cp-2"
	cbt := []disk.Extent{{Offset: blocks[0]*bs + 10, Length: 10}, {Offset: blocks[1] * bs, Length: bs}}
	res, err := s.SendDisk(context.Background(), changed.open(t), blockplan.Changed(src.size, bs, cbt), nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.BlocksChanged != 2 || res.BlocksZero != 1 || res.BytesRead != bs {
		t.Fatalf("result %+v; want 2 blocks changed, 1 zero, one block read", res)
	}
	h := hello(src.size, bs)
	h.CheckpointID = "cp-2"
	got, _ := os.ReadFile(target.Path(h, "img"))
	if !bytes.Equal(got, expected(t, changed.path, nil)) {
		t.Fatal("replica differs from the changed source")
	}
}

// TestDigestModeResumesAcrossCuts: an incremental transfer in digest mode,
// cut many times, with skipped blocks reported as passed positions, ends
// identical to the changed source.
func TestDigestModeResumesAcrossCuts(t *testing.T) {
	defer transfer.SetPassedInterval(0)()
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 12<<20, bs, 31)
	target := &transfertest.Target{Dir: t.TempDir()}
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 128 << 10})
	target.Begin(testJob, testVM, testCP)
	opts := options(bs)
	opts.CompareDigests = true
	if _, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, nil, opts, nil); err != nil {
		t.Fatal(err)
	}
	writes := map[int64][]byte{}
	for i, idx := range pickBlocks(t, src, bs, true, 40) {
		if i%3 == 0 {
			writes[idx] = fill(bs, byte(i))
		}
	}
	changed := changeSource(t, src, bs, writes)
	target.Begin(testJob, testVM, "cp-2")
	opts.CheckpointID = "cp-2"
	r := rand.New(rand.NewPCG(8, 9))
	proxy := newCutProxy(t, func() string { return addr }, func() int64 { return 2<<10 + r.Int64N(400<<10) })
	res, err := (&transfer.Sender{Address: proxy.addr(), TLS: client}).SendDiskWithRetry(context.Background(), changed.open(t), nil, nil, opts, nil,
		transfer.RetryPolicy{Attempts: 500, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if proxy.cuts.Load() < 2 {
		t.Fatalf("only %d cuts", proxy.cuts.Load())
	}
	if res.BytesWritten != int64(len(writes))*bs {
		t.Errorf("%d bytes written over all attempts, want %d", res.BytesWritten, int64(len(writes))*bs)
	}
	h := hello(src.size, bs)
	h.CheckpointID = "cp-2"
	checkReplica(t, target, h, expected(t, changed.path, nil), blockplan.All(src.size, bs))
	t.Logf("%d cuts, %+v", proxy.cuts.Load(), res)
}
