//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/testkit"
)

// Settings of TestFullCopyAgainstRsync (`make bench` sets them; the defaults
// keep `go test ./...` short).
const (
	fullCopySizeEnv = "REPLICATOR_FULLCOPY_MIB"  // disk size in MiB (default 16)
	fullCopyRunsEnv = "REPLICATOR_FULLCOPY_RUNS" // measured runs of each (default 1)
)

// TestFullCopyAgainstRsync replicates lab VMs whose one disk holds random
// bytes (what encrypted volumes and compressed files look like) or mixed
// content, each once through the whole stack (a ReplicationWorkflow run on
// the embedded Temporal server: prepare, checkpoint, begin, the transfer over
// mutual TLS, commit, reference point), and copies the same bytes with
// `rsync -z --whole-file` over rsync's protocol through a pipe, runs of the
// two interleaved, each command first in turn. Every run must succeed and
// the replica must equal the source; the figures (medians) are logged, not
// held to a limit: machines differ.
func TestFullCopyAgainstRsync(t *testing.T) {
	testkit.Long(t, "full copies against rsync")
	if _, err := exec.LookPath("rsync"); err != nil {
		testkit.Precondition(t, "rsync is needed: %v", err)
		return
	}
	sizeMiB, runs := 16, 1
	if v := os.Getenv(fullCopySizeEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 8 {
			t.Fatalf("%s=%q: want a size in MiB of at least 8", fullCopySizeEnv, v)
		}
		sizeMiB = n
	}
	if v := os.Getenv(fullCopyRunsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of runs", fullCopyRunsEnv, v)
		}
		runs = n
	}
	size := int64(sizeMiB) << 20
	kinds := []string{"random", "mixed"}
	var names []string
	for _, kind := range kinds {
		for i := range runs + 1 { // one uncounted warm-up run of each
			names = append(names, fmt.Sprintf("%s%02d", kind, i))
		}
	}
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Jobs[0].VMs = names[:1]
		c.Jobs[0].Exclude.Swap = false
	})
	ctx := context.Background()
	labPath := h.cfg.Hosts[0].Path
	host := lab.New("hv01", labPath)
	raws := map[string]string{}
	for _, kind := range kinds {
		raws[kind] = filepath.Join(h.dir, kind+".raw")
		content := fullCopyContent(kind, size)
		if err := os.WriteFile(raws[kind], content, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if !strings.HasPrefix(name, kind) {
				continue
			}
			if _, err := lab.CreateVM(labPath, name, []int64{size}); err != nil {
				t.Fatal(err)
			}
			const chunk = 4 << 20
			for off := int64(0); off < size; off += chunk {
				p := content[off:min(off+chunk, size)]
				if isZeroChunk(p) {
					continue // never written: the lab disk leaves it unallocated
				}
				if err := host.WriteAt(ctx, name, 0, p, off); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	replicate := func(name string, check bool) time.Duration {
		h.cfg.Jobs[0].VMs = []string{name}
		h.writeConfig()
		syscall.Sync()
		began := time.Now()
		res := h.run(contract.ReplicationInput{Job: "demo"})
		wall := time.Since(began)
		requireSuccess(t, res)
		if check {
			h.checkReplicaMatchesSource(res)
		}
		return wall
	}
	rsyncZ := func(raw string) time.Duration {
		dst := filepath.Join(h.dir, "rsync-out")
		os.RemoveAll(dst)
		if err := os.MkdirAll(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dst)
		syscall.Sync()
		began := time.Now()
		out, err := exec.Command("rsync", "-z", "--whole-file", "-e", `sh -c 'shift; exec "$@"' sh`, raw, "localhost:"+dst+"/").CombinedOutput()
		wall := time.Since(began)
		if err != nil {
			t.Fatalf("rsync -z: %v: %s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(dst, filepath.Base(raw)))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(raw)
		if !bytes.Equal(got, want) {
			t.Fatal("rsync's copy differs from its source")
		}
		return wall
	}

	t.Logf("| content (%d MiB disk) | replicator full run through Temporal (median of %d) | rsync -z --whole-file (median) | ratio | runs (s): replicator; rsync -z |", sizeMiB, runs)
	t.Logf("|---|---|---|---|---|")
	for _, kind := range kinds {
		var ours, theirs []time.Duration
		for i := range runs + 1 {
			name := fmt.Sprintf("%s%02d", kind, i)
			var o, r time.Duration
			if i%2 == 0 {
				o = replicate(name, i == 0)
				r = rsyncZ(raws[kind])
			} else {
				r = rsyncZ(raws[kind])
				o = replicate(name, false)
			}
			if i == 0 {
				continue // warm-up
			}
			ours, theirs = append(ours, o), append(theirs, r)
		}
		mo, mr := medianDuration(ours), medianDuration(theirs)
		t.Logf("| %s | %.2f s | %.2f s | %.2f | %s; %s |", kind, mo.Seconds(), mr.Seconds(), mo.Seconds()/mr.Seconds(), secondsList(ours), secondsList(theirs))
	}
}

// fullCopyContent returns the bytes of a disk of a kind, in 4 MiB runs:
// random, 80% random and 20% never written; mixed, text-like 30%, random
// 20%, a repeated 4 KiB page 20%, never written 30% (like the mixed disk of
// `make bench`, whose zero-filled runs are never written here).
func fullCopyContent(kind string, size int64) []byte {
	const run = 4 << 20
	rng := rand.New(rand.NewPCG(uint64(size), 19))
	words := strings.Fields("the of and replica block disk checkpoint server error info warning request " +
		"user time value config status 200 404 GET POST /api/v1/items id name data table index log")
	b := make([]byte, size)
	for off, i := int64(0), 0; off < size; off, i = off+run, i+1 {
		p := b[off:min(off+run, size)]
		kindOf := i % 10
		if kind == "random" && kindOf < 8 {
			kindOf = 3
		}
		switch kindOf {
		case 0, 1, 2: // text-like
			var t []byte
			for len(t) < len(p) {
				t = append(t, words[rng.IntN(len(words))]...)
				if rng.IntN(12) == 0 {
					t = append(t, '\n')
				} else {
					t = append(t, ' ')
				}
			}
			copy(p, t)
		case 3, 4: // random
			for j := 0; j+8 <= len(p); j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					p[j+k] = byte(v >> (8 * k))
				}
			}
		case 5, 6: // a repeated 4 KiB page
			page := make([]byte, 4096)
			for j := range page {
				page[j] = byte(rng.Uint32())
			}
			for j := 0; j < len(p); j += len(page) {
				copy(p[j:], page)
			}
		}
	}
	return b
}

func isZeroChunk(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func secondsList(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(parts, ", ")
}
