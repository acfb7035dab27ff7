package blockplan

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
)

// reference computes the blocks touching extents by testing every block.
func reference(size, bs int64, extents []disk.Extent) []Block {
	var out []Block
	for i := int64(0); i*bs < size; i++ {
		b := block(size, bs, i)
		for _, e := range extents {
			if e.Length > 0 && e.Offset < b.End() && e.End() > b.Offset {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

func TestFullMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for iter := 0; iter < 500; iter++ {
		bs := int64(1) << (9 + r.IntN(4))
		size := 1 + r.Int64N(40*bs)
		var ext []disk.Extent
		for n := r.IntN(6); n > 0; n-- {
			off := r.Int64N(size+bs) - bs/2
			ext = append(ext, disk.Extent{Offset: off, Length: r.Int64N(4*bs) - 10})
		}
		got := slices.Collect(Full(size, bs, ext))
		want := reference(size, bs, ext)
		if !slices.Equal(got, want) {
			t.Fatalf("size %d bs %d extents %v:\n got %v\nwant %v", size, bs, ext, got, want)
		}
		if !slices.IsSortedFunc(got, func(a, b Block) int { return int(a.Offset - b.Offset) }) {
			t.Fatalf("plan not sorted: %v", got)
		}
	}
}

func TestFullShortLastBlock(t *testing.T) {
	got := slices.Collect(Full(2500, 1024, []disk.Extent{{Offset: 0, Length: 2500}}))
	want := []Block{{Index: 0, Offset: 0, Length: 1024}, {Index: 1, Offset: 1024, Length: 1024}, {Index: 2, Offset: 2048, Length: 452}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := slices.Collect(Full(0, 1024, []disk.Extent{{Offset: 0, Length: 10}})); len(got) != 0 {
		t.Fatalf("empty disk: %v", got)
	}
	if got := slices.Collect(Full(100, 0, []disk.Extent{{Offset: 0, Length: 10}})); len(got) != 0 {
		t.Fatalf("zero block size: %v", got)
	}
	if got := slices.Collect(Full(4096, 1024, []disk.Extent{{Offset: 3000, Length: math.MaxInt64}})); !slices.Equal(got, []Block{{Index: 2, Offset: 2048, Length: 1024}, {Index: 3, Offset: 3072, Length: 1024}}) {
		t.Fatalf("overflowing extent: %v", got)
	}
}

// A changed range that is no longer allocated must still be planned: the
// replica holds the old bytes there.
func TestChangedIgnoresAllocation(t *testing.T) {
	changed := []disk.Extent{{Offset: 5000, Length: 100}, {Offset: 0, Length: 1}}
	got := slices.Collect(Changed(1<<20, 4096, changed))
	want := []Block{{Index: 0, Offset: 0, Length: 4096}, {Index: 1, Offset: 4096, Length: 4096}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDigestPlan(t *testing.T) {
	const bs, size = 1024, 10*1024 + 100 // 11 blocks, the last of 100 bytes
	prev := make([]digest.Sum, 11)
	for i := range prev {
		prev[i] = digest.Zero(bs)
	}
	prev[10] = digest.Zero(100)
	prev[3] = digest.Of([]byte("old data on the replica"))
	prev[10] = digest.Of([]byte("old tail"))
	allocated := []disk.Extent{{Offset: 5 * 1024, Length: 10}, {Offset: 7 * 1024, Length: 2048}}
	var idx []int64
	for b := range Digest(size, bs, allocated, SumSlice(prev)) {
		idx = append(idx, b.Index)
	}
	if want := []int64{3, 5, 7, 8, 10}; !slices.Equal(idx, want) {
		t.Fatalf("digest plan %v, want %v", idx, want)
	}
	// With no previous digests the plan is the full plan.
	if got, want := slices.Collect(Digest(size, bs, allocated, nil)), slices.Collect(Full(size, bs, allocated)); !slices.Equal(got, want) {
		t.Fatalf("digest plan without digests %v, want %v", got, want)
	}
}

func TestAllAndCount(t *testing.T) {
	n, bytes := Count(All(10*1024+1, 1024))
	if n != 11 || bytes != 10*1024+1 {
		t.Fatalf("All: %d blocks, %d bytes", n, bytes)
	}
}

// A huge sparse disk costs nothing to plan.
func TestHugeSparseDisk(t *testing.T) {
	const size = 64 << 40 // 64 TiB
	ext := []disk.Extent{{Offset: 0, Length: 3 << 20}, {Offset: size - 1, Length: 1}}
	n, _ := Count(Full(size, 1<<20, ext))
	if n != 4 {
		t.Fatalf("%d blocks, want 4", n)
	}
	allocs := testing.AllocsPerRun(10, func() { Count(Full(size, 1<<20, ext)) })
	if allocs > 10 {
		t.Fatalf("%v allocations to plan a sparse 64 TiB disk", allocs)
	}
}

// TestChangedPartsMatchReference checks the parts a Changed plan gives each
// block against a part-by-part test of every changed range: a part missing
// from the set would leave changed bytes off the replica.
func TestChangedPartsMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for iter := 0; iter < 500; iter++ {
		bs := int64(4096) << r.IntN(10) // 4 KiB to 2 MiB
		size := 1 + r.Int64N(12*bs)
		var ext []disk.Extent
		for n := r.IntN(8); n > 0; n-- {
			off := r.Int64N(size+bs) - bs/2
			ext = append(ext, disk.Extent{Offset: off, Length: r.Int64N(bs) - 10})
		}
		ps := PartSize(bs)
		var want []Block
		for _, b := range reference(size, bs, ext) {
			for i := range PartCount(b.Length, ps) {
				lo, hi := b.Offset+int64(i)*ps, min(b.Offset+int64(i+1)*ps, b.End())
				for _, e := range ext {
					if e.Length > 0 && e.Offset < hi && e.End() > lo {
						b.Changed |= 1 << i
						break
					}
				}
			}
			if b.Changed == AllParts(b.Length, ps) {
				b.Changed = 0
			}
			want = append(want, b)
		}
		got := slices.Collect(Changed(size, bs, ext))
		if !slices.Equal(got, want) {
			t.Fatalf("size %d bs %d extents %v:\n got %v\nwant %v", size, bs, ext, got, want)
		}
	}
}

func TestParts(t *testing.T) {
	for _, c := range []struct{ bs, part int64 }{{4096, 4096}, {64 << 10, 4096}, {256 << 10, 4096}, {1 << 20, 16 << 10}, {3 << 20, 48 << 10}, {64 << 20, 1 << 20}, {4096 + 512, 4096}} {
		if got := PartSize(c.bs); got != c.part {
			t.Errorf("PartSize(%d) = %d, want %d", c.bs, got, c.part)
		}
		if n := PartCount(c.bs, PartSize(c.bs)); n > 64 || n < 1 {
			t.Errorf("block of %d bytes has %d parts", c.bs, n)
		}
	}
	ps := PartSize(1 << 20)
	p := Covering(10, ps+1, 1<<20, ps)
	if p != 0b11 || p.Count() != 2 || p.Bytes(1<<20, ps) != 2*ps {
		t.Fatalf("Covering: %b", p)
	}
	// The last part of a short block is cut at the block's end.
	if got := AllParts(100<<10, 16<<10).Bytes(100<<10, 16<<10); got != 100<<10 {
		t.Fatalf("bytes of every part of a 100 KiB block: %d", got)
	}
	if AllParts(1<<20, ps) != ^Parts(0) || Covering(5, 5, 1<<20, ps) != 0 {
		t.Fatal("AllParts or an empty Covering")
	}
}
