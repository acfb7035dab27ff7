package lab

import (
	"context"
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

const mib = 1 << 20

// demoVM is a VM that Seed creates.
type demoVM struct {
	name  string
	disks []int64
}

// DemoVMs are the names of the VMs that Seed creates.
var DemoVMs = []string{"web01", "db01"}

var demoVMs = []demoVM{
	{name: "web01", disks: []int64{256 * mib}},
	{name: "db01", disks: []int64{256 * mib, 128 * mib}},
}

// Seed creates the demo VMs of `workers --dev` in the lab folder path, those
// that do not exist yet: web01 (one 256 MiB disk) and db01 (256 MiB and
// 128 MiB). Each first disk holds a GPT with a Linux data partition and a
// Linux swap partition; the disks hold text-like, random and repetitive data
// between never-written and zero-filled regions, so that zero detection,
// swap exclusion and compression all have work. A VM appears whole or not at
// all: it is built in a hidden folder and renamed into place.
func Seed(ctx context.Context, path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("seed lab VMs in %s: %w", path, err)
	}
	// The VMs are built side by side: most of the time goes to fsync.
	errs := make([]error, len(demoVMs))
	var wg sync.WaitGroup
	for i, vm := range demoVMs {
		dir := filepath.Join(path, vm.name)
		if _, err := os.Stat(filepath.Join(dir, metaFile)); err == nil {
			continue
		}
		if _, err := os.Stat(dir); err == nil {
			errs[i] = fmt.Errorf("seed lab VM %s: %s exists but holds no %s; remove it or pick another lab folder", vm.name, dir, metaFile)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := seedVM(ctx, path, vm, uint64(i+1)); err != nil {
				errs[i] = fmt.Errorf("seed lab VM %s in %s: %w", vm.name, path, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func seedVM(ctx context.Context, path string, vm demoVM, seed uint64) error {
	tmp := filepath.Join(path, "."+vm.name+".seeding")
	if err := os.RemoveAll(tmp); err != nil { // left by an interrupted seed
		return err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	cfg, err := Hardware{Processors: 2, MemoryBytes: 2 << 30, Switches: []string{"LAN"}}.config(len(vm.disks))
	if err != nil {
		return err
	}
	rec, err := createVMFiles(tmp, vm.name, vm.disks, &cfg)
	if err != nil {
		return err
	}
	for i, size := range vm.disks {
		var writes []pendingWrite
		if i == 0 {
			writes, err = partitionedContent(size, seed)
			if err != nil {
				return err
			}
		} else {
			writes = plainContent(size, seed*100+uint64(i))
		}
		if err := writeToDisk(ctx, tmp, rec, i, writes); err != nil {
			return err
		}
	}
	dir := filepath.Join(path, vm.name)
	if err := os.Rename(tmp, dir); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // created meanwhile by another seed
		}
		return err
	}
	return atomicfile.SyncDir(path)
}

// partitionedContent is a GPT disk: a Linux data partition with regions of
// varied data, and a swap partition with its header and some swapped-out
// pages. Later writes overwrite earlier ones.
func partitionedContent(size int64, seed uint64) ([]pendingWrite, error) {
	const sector = 512
	lastUsable := size/sector - 34
	swapLen := max(size/8/mib*mib, mib)
	swapFirst := (lastUsable + 1 - swapLen/sector) / 2048 * 2048
	dataFirst := int64(2048)
	parts := []gptPartition{
		{Type: gptTypeLinuxData, ID: seededUUID(seed, 1), FirstLBA: uint64(dataFirst), LastLBA: uint64(swapFirst - 1), Name: "root"},
		{Type: gptTypeLinuxSwap, ID: seededUUID(seed, 2), FirstLBA: uint64(swapFirst), LastLBA: uint64(swapFirst + swapLen/sector - 1), Name: "swap"},
	}
	gpt, err := buildGPT(size, seededUUID(seed, 0), parts)
	if err != nil {
		return nil, err
	}
	swapHdr, err := swapHeader(swapLen, seededUUID(seed, 3), "swap")
	if err != nil {
		return nil, err
	}
	dataOff, dataLen := dataFirst*sector, (swapFirst-dataFirst)*sector
	swapOff := swapFirst * sector
	at := func(frac float64) int64 { return dataOff + int64(float64(dataLen)*frac)/mib*mib }
	writes := []pendingWrite{
		{off: 0, data: gpt.Primary},
		{off: gpt.BackupOffset, data: gpt.Backup},
		{off: at(0.00), data: textData(seed, pages(12*dataLen/200))},
		{off: at(0.16), data: randomData(seed, pages(12*dataLen/200))},
		// Zeros over written data: allocated blocks that read as zeros, as
		// a guest leaves them after freeing space without trim.
		{off: at(0.16) + 4*mib, data: make([]byte, 4*mib)},
		{off: at(0.32), data: patternData(seed, pages(8*dataLen/200))},
		{off: at(0.60), data: textData(seed+7, pages(4*dataLen/200))},
		{off: swapOff, data: swapHdr},
		{off: swapOff + swapLen/4, data: randomData(seed+11, pages(swapLen/5))},
	}
	return writes, nil
}

// plainContent is an unpartitioned data disk (a database volume, say).
func plainContent(size int64, seed uint64) []pendingWrite {
	at := func(frac float64) int64 { return int64(float64(size)*frac) / mib * mib }
	return []pendingWrite{
		{off: at(0.00), data: textData(seed, size/16)},
		{off: at(0.25), data: randomData(seed, size/16)},
		{off: at(0.25) + 2*mib, data: make([]byte, 2*mib)},
		{off: at(0.60), data: patternData(seed, size/32)},
	}
}

// pages rounds a length down to whole 4 KiB pages, as a guest writes.
func pages(n int64) int64 { return n / 4096 * 4096 }

// seededUUID is a UUID that is the same for every seed of the demo.
func seededUUID(seed, n uint64) string {
	rng := rand.New(rand.NewPCG(seed, n))
	a, b := rng.Uint64(), rng.Uint64()
	a = a&^0xf000 | 0x4000 // version 4
	b = b&^(3<<62) | 2<<62 // variant 10
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// randomData does not compress.
func randomData(seed uint64, n int64) []byte {
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'r', 'n', 'd'})
	b := make([]byte, n)
	src.Read(b) // never fails
	return b
}

// patternData repeats a 512-byte record with a counter: it compresses very well.
func patternData(seed uint64, n int64) []byte {
	b := make([]byte, n)
	rec := make([]byte, 512)
	rng := rand.New(rand.NewPCG(seed, 99))
	for i := range rec {
		rec[i] = byte(rng.UintN(256))
	}
	for off := 0; off < len(b); off += len(rec) {
		copy(b[off:], rec)
		if off+8 <= len(b) {
			copy(b[off:], strconv.AppendInt(rec[:0:0], int64(off/len(rec)), 16))
		}
	}
	return b
}

var logWords = []string{"GET", "POST", "/index.html", "/api/v1/orders", "/static/app.js", "200", "304", "404", "500",
	"user", "session", "cache", "miss", "hit", "upstream", "timeout", "connection", "reset", "checkout", "login",
	"INFO", "WARN", "ERROR", "debug", "request", "completed", "in", "ms", "bytes", "client"}

// textData looks like a server log: it compresses a few times.
func textData(seed uint64, n int64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, 0, n+256)
	t := int64(1700000000)
	for int64(len(b)) < n {
		t += int64(rng.IntN(3))
		b = strconv.AppendInt(b, t, 10)
		b = append(b, " web["...)
		b = strconv.AppendInt(b, int64(1000+rng.IntN(50)), 10)
		b = append(b, "]:"...)
		for w := 4 + rng.IntN(8); w > 0; w-- {
			b = append(b, ' ')
			b = append(b, logWords[rng.IntN(len(logWords))]...)
		}
		b = append(b, " id="...)
		b = strconv.AppendUint(b, rng.Uint64()>>20, 36)
		b = append(b, '\n')
	}
	return b[:n]
}
