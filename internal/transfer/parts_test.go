package transfer_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
	"github.com/replicator/replicator/internal/zeros"
)

// writeRanges copies src to a new file and writes random bytes over each
// range, as a guest writing a few sectors here and there.
func writeRanges(t *testing.T, src source, ranges []disk.Extent, seed uint64) source {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	path := rewrite(t, src, "written.img", func(b []byte) {
		for _, e := range ranges {
			for i := e.Offset; i < e.End(); i++ {
				b[i] = byte(r.Uint32())
			}
		}
	})
	return source{path: path, size: src.size, allocated: []disk.Extent{{Offset: 0, Length: src.size}}}
}

// partsWritten is what the agent must write for a changed plan: nothing of a
// block wholly excluded, the changed parts (with those holding excluded
// bytes) of a block not wholly changed, the whole block otherwise.
func partsWritten(plan blockplan.Plan, excluded []disk.Extent, bs int64) int64 {
	ps := blockplan.PartSize(bs)
	var n int64
blocks:
	for b := range plan {
		parts := b.Changed
		for _, e := range excluded {
			if e.Offset <= b.Offset && e.End() >= b.End() {
				continue blocks
			}
			parts |= blockplan.Covering(e.Offset-b.Offset, e.End()-b.Offset, b.Length, ps)
		}
		if b.Changed != 0 && parts != blockplan.AllParts(b.Length, ps) {
			n += parts.Bytes(b.Length, ps)
		} else {
			n += b.Length
		}
	}
	return n
}

// TestChangedPartsTravelAlone: after a full copy, small writes scattered
// over the disk (some across block boundaries, one over an excluded range)
// travel as the parts of their blocks that changed; the transfer, cut many
// times, ends with the replica identical to the source and every digest
// that of the whole block.
func TestChangedPartsTravelAlone(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 1 << 20 // parts of 16 KiB
	src := makeSource(t, t.TempDir(), 24<<20+12345, bs, 41)
	src.allocated = []disk.Extent{{Offset: 0, Length: src.size}}
	excluded := []disk.Extent{{Offset: 5*bs + 100<<10, Length: 3 << 10}, {Offset: 9 * bs, Length: 2 * bs}}
	target := &transfertest.Target{Dir: t.TempDir()}
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 64 << 10})
	target.Begin(testJob, testVM, testCP)
	s := &transfer.Sender{Address: addr, TLS: client}
	if _, err := s.SendDisk(context.Background(), src.open(t), nil, excluded, options(bs), nil); err != nil {
		t.Fatal(err)
	}

	r := rand.New(rand.NewPCG(42, 43))
	var changed []disk.Extent
	for range 30 {
		off := r.Int64N(src.size - 64<<10)
		changed = append(changed, disk.Extent{Offset: off, Length: 1 + r.Int64N(40<<10)})
	}
	changed = append(changed,
		disk.Extent{Offset: 3*bs - 2000, Length: 5000},       // across a block boundary
		disk.Extent{Offset: 5*bs + 90<<10, Length: 20 << 10}, // over the excluded range inside block 5
		disk.Extent{Offset: 12 * bs, Length: 700 << 10},      // most of block 12: sent whole
		disk.Extent{Offset: src.size - 100, Length: 100},     // the short last block
		disk.Extent{Offset: 9*bs + 4096, Length: 8192})       // inside a wholly excluded block
	next := writeRanges(t, src, changed, 7)
	plan := blockplan.Changed(src.size, bs, changed)
	target.Begin(testJob, testVM, "cp-2")
	opts := options(bs)
	opts.CheckpointID = "cp-2"
	opts.Compression = codec.Fast
	cuts := rand.New(rand.NewPCG(5, 6))
	proxy := newCutProxy(t, func() string { return addr }, func() int64 { return 4<<10 + cuts.Int64N(3<<20) })
	res, err := (&transfer.Sender{Address: proxy.addr(), TLS: client}).SendDiskWithRetry(context.Background(), next.open(t), plan, excluded, opts, nil,
		transfer.RetryPolicy{Attempts: 500, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if proxy.cuts.Load() < 2 {
		t.Fatalf("only %d cuts: the test did not exercise resuming", proxy.cuts.Load())
	}
	h := hello(src.size, bs)
	h.CheckpointID = "cp-2"
	checkReplica(t, target, h, expected(t, next.path, excluded), blockplan.All(src.size, bs))
	want := partsWritten(plan, excluded, bs)
	blocks, planned := blockplan.Count(plan)
	if res.BytesWritten != want || want >= planned/2 {
		t.Fatalf("%d bytes written over all attempts, want %d (of %d bytes in %d changed blocks)", res.BytesWritten, want, planned, blocks)
	}
	t.Logf("%d cuts; %d changed blocks (%d bytes): %d bytes written, %d sent", proxy.cuts.Load(), blocks, planned, res.BytesWritten, res.BytesSent)
}

// TestReplicaDiffersSendsWholeBlocks: when the replica's block differs from
// the source outside the parts that changed (a change the tracking missed,
// or a damaged replica), the agent writes nothing of the partial frame and
// says so; one attempt fails with ErrReplicaDiffers, and SendDiskWithRetry
// goes on with whole blocks and repairs the block.
func TestReplicaDiffersSendsWholeBlocks(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 256 << 10
	src := makeSource(t, t.TempDir(), 8<<20, bs, 51)
	src.allocated = []disk.Extent{{Offset: 0, Length: src.size}}
	target := &transfertest.Target{Dir: t.TempDir()}
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 1})
	target.Begin(testJob, testVM, testCP)
	s := &transfer.Sender{Address: addr, TLS: client}
	if _, err := s.SendDisk(context.Background(), src.open(t), nil, nil, options(bs), nil); err != nil {
		t.Fatal(err)
	}
	changed := []disk.Extent{{Offset: 1*bs + 4096, Length: 4096}, {Offset: 6*bs + 8192, Length: 100}}
	next := writeRanges(t, src, changed, 9)
	// A byte of block 6 outside its changed part is wrong on the replica.
	h := hello(src.size, bs)
	img, err := os.OpenFile(target.Path(h, "img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	img.ReadAt(b[:], 6*bs+100)
	b[0] ^= 0x55
	img.WriteAt(b[:], 6*bs+100)
	img.Close()

	before, _ := os.ReadFile(target.Path(h, "img"))
	target.Begin(testJob, testVM, "cp-2")
	opts := options(bs)
	opts.CheckpointID = "cp-2"
	plan := blockplan.Changed(src.size, bs, changed)
	res, err := s.SendDisk(context.Background(), next.open(t), plan, nil, opts, nil)
	if !errors.Is(err, transfer.ErrReplicaDiffers) || !transfer.IsRetryable(err) {
		t.Fatalf("want a retryable ErrReplicaDiffers, got %v", err)
	}
	if res.Acknowledged > 6*bs {
		t.Fatalf("position %d acknowledged past the block that did not verify", res.Acknowledged)
	}
	after, _ := os.ReadFile(target.Path(h, "img"))
	if string(after[6*bs:7*bs]) != string(before[6*bs:7*bs]) {
		t.Fatal("the agent wrote parts of a block that did not verify")
	}

	res, err = s.SendDiskWithRetry(context.Background(), next.open(t), plan, nil, opts, nil, transfer.RetryPolicy{Attempts: 1})
	if err != nil {
		t.Fatalf("with whole blocks after the mismatch: %v", err)
	}
	h.CheckpointID = "cp-2"
	checkReplica(t, target, h, expected(t, next.path, nil), blockplan.All(src.size, bs))
	if res.BytesWritten < bs {
		t.Fatalf("%d bytes written: block 6 was not sent whole", res.BytesWritten)
	}
}

// TestZeroBlocksAsData: with exclude.zeroBlocks off, allocated blocks of
// zeros travel as data frames and are not counted as zero blocks; the
// replica is the same either way.
func TestZeroBlocksAsData(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 4<<20, bs, 61)
	data := src.bytes(t)
	var zeroBlocks int64
	for b := range blockplan.Full(src.size, bs, src.allocated) {
		if zeros.All(data[b.Offset:b.End()]) {
			zeroBlocks++
		}
	}
	if zeroBlocks == 0 {
		t.Fatal("the source has no allocated zero block")
	}
	for _, asData := range []bool{false, true} {
		target := &transfertest.Target{Dir: t.TempDir()}
		target.Begin(testJob, testVM, testCP)
		addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
		opts := options(bs)
		opts.ZeroBlocksAsData = asData
		res, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, nil, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := zeroBlocks
		if asData {
			want = 0
		}
		if res.BlocksZero != want {
			t.Fatalf("zero blocks as data %v: %d zero frames, want %d", asData, res.BlocksZero, want)
		}
		checkReplica(t, target, hello(src.size, bs), data, blockplan.Full(src.size, bs, src.allocated))
	}
}
