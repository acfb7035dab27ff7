package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/digest"
)

// testSeed returns REPLICA_SEED if set, else a fresh seed; the test logs it so
// that a failure can be replayed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("REPLICA_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("REPLICA_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with REPLICA_SEED=%d)", seed, seed)
	return seed
}

// modelPoint is what a listed restore point must contain.
type modelPoint struct {
	checkpoint string
	disks      map[string][]byte
}

// planWrite is one write a run sends.
type planWrite struct {
	off  int64
	data []byte
}

// testVM returns a VM with two small disks; the first ends in a short block.
func testVM() VMInfo {
	return VMInfo{ID: "vm-1", Name: "web01", Generation: 2, Disks: []DiskInfo{
		{ID: "disk0", Size: 1<<20 + 3*512, SectorSize: 512},
		{ID: "disk1", Size: 768 << 10, SectorSize: 512},
	}}
}

// randomPlan returns writes in offset order, block-aligned or sector-aligned
// parts of one block, random or zero bytes.
func randomPlan(rng *rand.Rand, size, blockSize int64, maxBlocks int) []planWrite {
	n := blockCount(size, blockSize)
	var plan []planWrite
	for b := int64(0); b < n; b++ {
		if rng.IntN(int(n)) >= maxBlocks {
			continue
		}
		bl := blockLen(size, blockSize, b)
		off, length := b*blockSize, bl
		if rng.IntN(10) < 3 { // part of the block, sector aligned
			sectors := bl / 512
			s := rng.Int64N(sectors)
			off += s * 512
			length = (1 + rng.Int64N(sectors-s)) * 512
		}
		data := make([]byte, length)
		if rng.IntN(5) > 0 {
			for i := range data {
				data[i] = byte(rng.UintN(256))
			}
		}
		plan = append(plan, planWrite{off: off, data: data})
	}
	return plan
}

func applyPlan(base []byte, plan []planWrite) []byte {
	out := append([]byte(nil), base...)
	for _, w := range plan {
		copy(out[w.off:], w.data)
	}
	return out
}

func readAllImage(t testing.TB, r io.ReaderAt, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read image: %v", err)
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// checkAgainstModel asserts that the replica lists exactly the model's
// points, that each disk of each reads and materializes (raw) to the model's
// bytes, and that each verifies against its digests.
func checkAgainstModel(t testing.TB, r *Replica, want []modelPoint, materializeDir string) {
	t.Helper()
	checkPoints(t, r, want, materializeDir, true)
}

// checkPoints is checkAgainstModel with the verify optional.
func checkPoints(t testing.TB, r *Replica, want []modelPoint, materializeDir string, verify bool) {
	t.Helper()
	pts, err := r.Points()
	if err != nil {
		t.Fatalf("points: %v", err)
	}
	if len(pts) != len(want) {
		t.Fatalf("replica lists %d points, model has %d (%v)", len(pts), len(want), pointCheckpoints(pts))
	}
	ctx := context.Background()
	for i, p := range pts {
		if p.CheckpointID != want[i].checkpoint || !p.Complete {
			t.Fatalf("point %d: checkpoint %q complete %v, model %q", i, p.CheckpointID, p.Complete, want[i].checkpoint)
		}
		for id, data := range want[i].disks {
			img, err := r.OpenPoint(p.ID, id)
			if err != nil {
				t.Fatalf("open point %s disk %s: %v", p.ID, id, err)
			}
			got := readAllImage(t, img, img.Size())
			img.Close()
			if d := firstDiff(got, data); d >= 0 {
				t.Fatalf("point %d (%s, %s) disk %s differs from the model at byte %d", i, p.ID, p.CheckpointID, id, d)
			}
			if materializeDir != "" {
				out := filepath.Join(materializeDir, fmt.Sprintf("%s-%s.raw", p.ID, id))
				if err := r.Materialize(ctx, p.ID, id, out, FormatRaw); err != nil {
					t.Fatalf("materialize: %v", err)
				}
				raw, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				os.Remove(out)
				if !bytes.Equal(raw, data) {
					t.Fatalf("materialized point %s disk %s differs from the model at byte %d", p.ID, id, firstDiff(raw, data))
				}
			}
		}
		if !verify {
			continue
		}
		rep, err := r.Verify(ctx, p.ID)
		if err != nil || !rep.OK {
			t.Fatalf("verify point %s: %v (%+v)", p.ID, err, rep)
		}
	}
}

func pointCheckpoints(pts []Point) []string {
	var s []string
	for _, p := range pts {
		s = append(s, p.CheckpointID)
	}
	return s
}

// setDigestOf gives the source's digest of a whole-block write.
func setDigestOf(t testing.TB, dw *DiskWriter, w planWrite) {
	t.Helper()
	bs := dw.BlockSize()
	if w.off%bs == 0 && int64(len(w.data)) == blockLen(dw.Size(), bs, w.off/bs) {
		if err := dw.SetDigest(w.off/bs, digest.Of(w.data)); err != nil {
			t.Fatalf("set digest: %v", err)
		}
	}
}

// fastTempDir is a temporary folder in memory where the machine has one:
// these tests sync after every step, and what they check is the order of
// operations and the bytes, not the speed of a disk.
func fastTempDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "replica-test-*")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}
