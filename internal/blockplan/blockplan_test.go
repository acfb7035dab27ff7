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
	want := []Block{{0, 0, 1024}, {1, 1024, 1024}, {2, 2048, 452}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := slices.Collect(Full(0, 1024, []disk.Extent{{Offset: 0, Length: 10}})); len(got) != 0 {
		t.Fatalf("empty disk: %v", got)
	}
	if got := slices.Collect(Full(100, 0, []disk.Extent{{Offset: 0, Length: 10}})); len(got) != 0 {
		t.Fatalf("zero block size: %v", got)
	}
	if got := slices.Collect(Full(4096, 1024, []disk.Extent{{Offset: 3000, Length: math.MaxInt64}})); !slices.Equal(got, []Block{{2, 2048, 1024}, {3, 3072, 1024}}) {
		t.Fatalf("overflowing extent: %v", got)
	}
}

// A changed range that is no longer allocated must still be planned: the
// replica holds the old bytes there.
func TestChangedIgnoresAllocation(t *testing.T) {
	changed := []disk.Extent{{Offset: 5000, Length: 100}, {Offset: 0, Length: 1}}
	got := slices.Collect(Changed(1<<20, 4096, changed))
	want := []Block{{0, 0, 4096}, {1, 4096, 4096}}
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
