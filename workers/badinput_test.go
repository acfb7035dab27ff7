package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/agent"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/guid"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
	"github.com/replicator/replicator/internal/vhdx"
	"github.com/replicator/replicator/internal/vhdx/vhdxtest"
)

// TestBadInput collects the product's bad-input cases: hostile disk images,
// damaged replicas, hostile clients of the agent's data channel, malformed
// configurations and malformed workflow inputs, each fed through a surface
// a user or an attacker really reaches (the starter binary, the worker's
// command line, the agent's TLS listener, the Temporal server). Every case
// asserts three things:
//
//   - a clear error that names what is wrong and where (path, key path and
//     line, byte offset, field or name);
//   - no panic (in-process surfaces would crash the test binary; a workflow
//     task that panics or fails is detected in the history instead of being
//     retried until a timeout);
//   - nothing written outside the datastore: the whole temporary tree of the
//     case (and the working directory) is snapshotted before and compared
//     after, and where the case must not write inside the datastore either,
//     the datastore too.
func TestBadInput(t *testing.T) {
	clearReplicatorEnv(t)
	root := t.TempDir()
	starter := buildStarter(t, filepath.Join(root, "bin"))
	t.Run("disk", func(t *testing.T) { badDisks(t, root, starter) })
	t.Run("replica", func(t *testing.T) { badReplicas(t, root, starter) })
	t.Run("agent", func(t *testing.T) { badAgentClients(t, root) })
	t.Run("config", func(t *testing.T) { badConfigs(t, root) })
	t.Run("workflow", func(t *testing.T) { badWorkflowInputs(t, root) })
}

// ---- nothing written: snapshots of the trees a case may not touch ----

// fileState is what a snapshot records of one path.
type fileState struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	sum   string // sha256 of files up to hashLimit bytes
	link  string
}

const hashLimit = 4 << 20

type snapshot map[string]fileState

// takeSnapshot records every path under roots except those under skip.
func takeSnapshot(t *testing.T, roots, skip []string) snapshot {
	t.Helper()
	s := snapshot{}
	for _, r := range roots {
		err := filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			for _, sk := range skip {
				if p == sk {
					return filepath.SkipDir
				}
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			st := fileState{mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime()}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				st.link, _ = os.Readlink(p)
			case fi.Mode().IsRegular() && fi.Size() <= hashLimit:
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				h := sha256.Sum256(b)
				st.sum = hex.EncodeToString(h[:])
			}
			if fi.IsDir() {
				// A folder changes with its entries, which are watched
				// themselves: an allowed lock file must not count.
				st.size, st.mtime = 0, time.Time{}
			}
			s[p] = st
			return nil
		})
		if err != nil {
			t.Fatalf("snapshot %s: %v", r, err)
		}
	}
	return s
}

// diff lists every path created, removed or changed between s and after
// for which allowed (nil: none) does not say the change is expected.
func (s snapshot) diff(after snapshot, allowed func(path string) bool) []string {
	var out []string
	ok := func(p string) bool { return allowed != nil && allowed(p) }
	for p, b := range s {
		a, found := after[p]
		switch {
		case !found && !ok(p):
			out = append(out, "removed "+p)
		case found && a != b && !ok(p):
			out = append(out, fmt.Sprintf("changed %s (size %d→%d, mtime %s→%s)", p, b.size, a.size, b.mtime.Format(time.RFC3339Nano), a.mtime.Format(time.RFC3339Nano)))
		}
	}
	for p := range after {
		if _, found := s[p]; !found && !ok(p) {
			out = append(out, "created "+p)
		}
	}
	sort.Strings(out)
	return out
}

// watched is what one case may not write to.
type watched struct {
	roots []string // trees where nothing may change
	skip  []string // folders inside roots that are not watched here: datastores, Temporal's database
	// store, when set, is a datastore watched too: only paths for which
	// allowInStore says yes may change there.
	store        string
	allowInStore func(path string) bool
}

// watch snapshots w and returns the check to call after the case: it fails
// the case for every file created, removed or changed where it may not be,
// and for any new entry in the working directory (where a relative default
// such as .replicator would land).
func watch(t *testing.T, w watched) (check func()) {
	t.Helper()
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, w.roots, w.skip)
	var storeBefore snapshot
	if w.store != "" {
		storeBefore = takeSnapshot(t, []string{w.store}, nil)
	}
	cwdBefore := dirNames(t, cwd)
	return func() {
		t.Helper()
		for _, d := range before.diff(takeSnapshot(t, w.roots, w.skip), nil) {
			t.Errorf("outside the datastore: %s", d)
		}
		if w.store != "" {
			for _, d := range storeBefore.diff(takeSnapshot(t, []string{w.store}, nil), w.allowInStore) {
				t.Errorf("inside the datastore: %s", d)
			}
		}
		for name := range dirNames(t, cwd) {
			// Go files are the source of this package, which people edit
			// while tests run; the product writes none.
			if !cwdBefore[name] && filepath.Ext(name) != ".go" {
				t.Errorf("created %s in the working directory", filepath.Join(cwd, name))
			}
		}
	}
}

func dirNames(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, e := range entries {
		m[e.Name()] = true
	}
	return m
}

// requireAll fails unless text holds every fragment of want.
func requireAll(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, text)
		}
	}
}

// clearReplicatorEnv removes REPLICATOR_* variables for the test, so that
// only the files the cases write configure the product.
func clearReplicatorEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "REPLICATOR_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

// ---- the starter binary ----

// buildStarter builds the operator command line once (it is package main
// of another folder, so it cannot be called in-process from here).
func buildStarter(t *testing.T, dir string) string {
	t.Helper()
	goTool := testkit.RequireTool(t, "go")
	bin := filepath.Join(dir, "starter")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/replicator/replicator/starter")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build starter: %v\n%s", err, out)
	}
	return bin
}

type cmdResult struct {
	code           int
	stdout, stderr string
}

// runStarterBin runs the starter binary in dir (an empty folder of the
// watched tree, so that anything it writes relative to its working
// directory is seen) and returns its exit code and output.
func runStarterBin(t *testing.T, bin, dir string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cmdResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("starter %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("starter %s did not finish within a minute", strings.Join(args, " "))
	}
	if strings.Contains(res.stderr, "panic:") || strings.Contains(res.stderr, "goroutine ") {
		t.Fatalf("starter %s panicked:\n%s", strings.Join(args, " "), res.stderr)
	}
	return res
}

// ---- hostile VHDX files: starter disk info / disk convert ----

// writeVHDX makes an 8 MiB dynamic VHDX with 1 MiB blocks, blocks 0 and 2
// written, with the product's writer.
func writeVHDX(t *testing.T, path string) []byte {
	t.Helper()
	d, err := vhdx.Create(path, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 2 << 20} {
		if _, err := d.WriteAt(bytes.Repeat([]byte("hostile!"), (1<<20)/8), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// qemuVHDX makes an 8 MiB VHDX with qemu-img: damage to the structures
// every VHDX has at fixed offsets must be caught in files others wrote too.
func qemuVHDX(t *testing.T, path string) []byte {
	t.Helper()
	qemu := testkit.RequireTool(t, "qemu-img")
	if out, err := exec.Command(qemu, "create", "-q", "-f", "vhdx", path, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forge writes a damaged copy of b, made by damage, to path.
func forge(t *testing.T, path string, b []byte, damage func(b []byte) []byte) string {
	t.Helper()
	if err := os.WriteFile(path, damage(append([]byte(nil), b...)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type diskCase struct {
	name string
	// convert runs `disk convert FILE DST` instead of `disk info FILE --json`.
	convert bool
	// build writes the hostile file into dir and returns its path, the file
	// offset a *vhdx.FormatError must name (-1: the error is not about one
	// structure of the file, a missing parent, and names paths instead), and
	// the fragments the error must hold besides the path.
	build func(t *testing.T, dir string, good []byte) (path string, offset int64, want []string)
}

// noFormatError is the offset of cases whose error is not a *vhdx.FormatError.
const noFormatError = -1

func badDisks(t *testing.T, root, starter string) {
	top := filepath.Join(root, "disk")
	if err := os.MkdirAll(top, 0o755); err != nil {
		t.Fatal(err)
	}
	good := writeVHDX(t, filepath.Join(top, "good.vhdx"))
	// The forging starts from a file the product reads, so that every
	// failure below is due to its damage alone.
	if _, err := diskimage.Describe(context.Background(), filepath.Join(top, "good.vhdx")); err != nil {
		t.Fatalf("the undamaged image does not open: %v", err)
	}
	bad := func(dir string) string { return filepath.Join(dir, "bad.vhdx") }
	bat, _ := vhdxtest.Region(t, good, vhdxtest.RegionBAT)
	meta, _ := vhdxtest.Region(t, good, vhdxtest.RegionMetadata)
	logOff := int64(binary.LittleEndian.Uint64(good[vhdxtest.Header1+72:]))
	logGUID := guid.MustParse("11111111-2222-4333-8444-555555555555")
	const tib = 1 << 40
	cases := []diskCase{
		{name: "file identifier is not vhdxfile",
			build: func(t *testing.T, dir string, _ []byte) (string, int64, []string) {
				b := qemuVHDX(t, filepath.Join(dir, "qemu.vhdx"))
				return forge(t, bad(dir), b, func(b []byte) []byte { copy(b, "vhdxfilX"); return b }), 0, []string{"not a VHDX file"}
			}},
		{name: "both header checksums wrong",
			build: func(t *testing.T, dir string, _ []byte) (string, int64, []string) {
				b := qemuVHDX(t, filepath.Join(dir, "qemu.vhdx"))
				return forge(t, bad(dir), b, func(b []byte) []byte {
					b[vhdxtest.Header1+300] ^= 0xff
					b[vhdxtest.Header2+300] ^= 0xff
					return b
				}), vhdxtest.Header1, []string{"no valid header", "header checksum mismatch", fmt.Sprintf("at offset %d", vhdxtest.Header2)}
			}},
		{name: "region table points past the end of the file",
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				return forge(t, bad(dir), good, func(b []byte) []byte {
					_, field := vhdxtest.Region(t, b, vhdxtest.RegionBAT)
					vhdxtest.SetBoth(b, field, vhdxtest.LE64(tib))
					return b
				}), tib, []string{"region", "extends past end of file"}
			}},
		{name: "BAT entry points outside the file", convert: true,
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				return forge(t, bad(dir), good, func(b []byte) []byte {
					copy(b[bat:], vhdxtest.LE64(6|uint64(tib>>20)<<20)) // block 0 fully present at 1 TiB
					return b
				}), bat, []string{"BAT entry 0", fmt.Sprintf("block at %d extends past end of file", int64(tib))}
			}},
		{name: "block size not a power of two",
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				return forge(t, bad(dir), good, func(b []byte) []byte {
					copy(b[vhdxtest.MetaItem(t, b, vhdxtest.FileParameters):], vhdxtest.LE32(3<<20))
					return b
				}), meta, []string{"block size 3145728 invalid"}
			}},
		{name: "virtual size zero",
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				return forge(t, bad(dir), good, func(b []byte) []byte {
					copy(b[vhdxtest.MetaItem(t, b, vhdxtest.VirtualSize):], vhdxtest.LE64(0))
					return b
				}), meta, []string{"virtual disk size 0 invalid"}
			}},
		{name: "virtual size absurd", convert: true,
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				return forge(t, bad(dir), good, func(b []byte) []byte {
					copy(b[vhdxtest.MetaItem(t, b, vhdxtest.VirtualSize):], vhdxtest.LE64(1<<62))
					return b
				}), meta, []string{"virtual disk size 4611686018427387904 invalid"}
			}},
		{name: "parent locators form a cycle",
			build: func(t *testing.T, dir string, _ []byte) (string, int64, []string) {
				base := filepath.Join(dir, "base.vhdx")
				writeVHDX(t, base)
				c1, c2 := filepath.Join(dir, "child1.vhdx"), filepath.Join(dir, "child2.vhdx")
				for _, c := range [][2]string{{c1, base}, {c2, c1}} {
					d, err := vhdx.CreateDifferencing(c[0], c[1], vhdx.CreateOptions{BlockSize: 1 << 20})
					if err != nil {
						t.Fatal(err)
					}
					d.Close()
				}
				if err := vhdx.SetParent(c1, c2); err != nil { // child2 → child1 → child2
					t.Fatal(err)
				}
				return c2, 0, []string{"parent chain loops back", c1}
			}},
		{name: "differencing disk whose parent is missing", convert: true,
			build: func(t *testing.T, dir string, _ []byte) (string, int64, []string) {
				base := filepath.Join(dir, "base.vhdx")
				writeVHDX(t, base)
				child := filepath.Join(dir, "child.vhdx")
				d, err := vhdx.CreateDifferencing(child, base, vhdx.CreateOptions{BlockSize: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
				d.Close()
				if err := os.Remove(base); err != nil {
					t.Fatal(err)
				}
				return child, noFormatError, []string{"no usable parent", base, "no such file"}
			}},
		{name: "truncated file", convert: true,
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				// The block stored last loses its last 4 KiB.
				last, lastOff := 0, int64(0)
				for i := range 8 {
					if off := int64(binary.LittleEndian.Uint64(good[bat+8*int64(i):]) >> 20 << 20); off > lastOff {
						last, lastOff = i, off
					}
				}
				return forge(t, bad(dir), good, func(b []byte) []byte { return b[:len(b)-4096] }),
					bat + 8*int64(last), []string{fmt.Sprintf("BAT entry %d: block at %d extends past end of file (%d)", last, lastOff, len(good)-4096)}
			}},
		{name: "log entry says the file was flushed past its end",
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				size := uint64(len(good))
				return forge(t, bad(dir), good, func(b []byte) []byte {
					copy(b[logOff:], vhdxtest.LogEntry(logGUID[:], size+8<<20, size+8<<20))
					vhdxtest.SetBoth(b, vhdxtest.Header1+48, logGUID[:]) // LogGuid: the log is active
					return b
				}), logOff, []string{fmt.Sprintf("log says the file was flushed to %d bytes but it has %d", size+8<<20, size)}
			}},
		{name: "log region outside the file", convert: true,
			build: func(t *testing.T, dir string, good []byte) (string, int64, []string) {
				return forge(t, bad(dir), good, func(b []byte) []byte {
					copy(b[vhdxtest.Header1+72:], vhdxtest.LE64(tib)) // LogOffset
					copy(b[vhdxtest.Header2+72:], vhdxtest.LE64(tib))
					vhdxtest.SetBoth(b, vhdxtest.Header1+48, logGUID[:])
					return b
				}), tib, []string{"log region (length 1048576) extends past end of file"}
			}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(top, fmt.Sprintf("case%02d", i))
			work := filepath.Join(dir, "cwd")
			for _, d := range []string{dir, work} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			path, offset, want := c.build(t, dir, good)
			want = append(want, path)

			// In-process: the error is a *vhdx.FormatError at the offset of
			// the damaged structure (or, for a missing parent, names both files).
			_, err := diskimage.Describe(context.Background(), path)
			var fe *vhdx.FormatError
			switch {
			case err == nil:
				t.Fatal("the hostile image was described without error")
			case offset != noFormatError && !errors.As(err, &fe):
				t.Errorf("error %v is not a *vhdx.FormatError", err)
			case offset != noFormatError && (fe.Offset != offset || fe.Path == ""):
				t.Errorf("error %v: offset %d in %q, want offset %d", err, fe.Offset, fe.Path, offset)
			}
			requireAll(t, "the error", err.Error(), want...)

			// Through the command line: exit 1, the error on stderr, no
			// output, and for convert no DST, partial or complete.
			check := watch(t, watched{roots: []string{root}})
			dst := filepath.Join(dir, "out.raw")
			args := []string{"disk", "info", path, "--json"}
			if c.convert {
				args = []string{"disk", "convert", path, dst, "--format", "raw"}
			}
			res := runStarterBin(t, starter, work, args...)
			t.Logf("starter %s: %s", args[1], strings.TrimSpace(res.stderr))
			if res.code != 1 {
				t.Errorf("exit code %d, want 1\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
			}
			if res.stdout != "" {
				t.Errorf("printed on stdout for a hostile image:\n%s", res.stdout)
			}
			requireAll(t, "stderr", res.stderr, want...)
			if offset != noFormatError {
				requireAll(t, "stderr", res.stderr, fmt.Sprintf("offset %d:", offset))
			}
			if _, err := os.Lstat(dst); err == nil {
				t.Errorf("disk convert left %s", dst)
			}
			check()
		})
	}
}

// ---- damaged replica metadata: starter points / verify / failover, Lock ----

const (
	replicaJob = "demo"
	replicaVM  = "0f9e-vm"
)

// makeTwoPointReplica writes a replica of VM web01 (disks boot and data)
// with two restore points into datastore, as the agent would.
func makeTwoPointReplica(t *testing.T, datastore string) {
	t.Helper()
	st, err := replica.Open(datastore)
	if err != nil {
		t.Fatal(err)
	}
	replicatest.WriteTwoPoints(t, st, replicaJob, replicaVM, "badinput setup")
}

// metaJSON is replica.json as generic JSON, to damage it field by field.
type metaJSON = map[string]any

func readMeta(t *testing.T, rd string) metaJSON {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rd, "replica.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m metaJSON
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func writeMeta(t *testing.T, rd string, m metaJSON) {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rd, "replica.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pointDisk returns disk i of point p of the metadata.
func pointDisk(m metaJSON, p, i int) map[string]any {
	return m["points"].([]any)[p].(map[string]any)["disks"].([]any)[i].(map[string]any)
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

type replicaCase struct {
	name string
	// damage breaks the replica in folder rd and returns the fragments the
	// error must hold.
	damage func(t *testing.T, rd string) []string
	// args is the starter command (--data-dir is added); nil takes the
	// writer lock in-process instead, as the agent does.
	args []string
}

func badReplicas(t *testing.T, root, starter string) {
	top := filepath.Join(root, "replica")
	pristine := filepath.Join(top, "pristine")
	makeTwoPointReplica(t, pristine)
	// Readers and the writer take their lock files inside the replica: the
	// only files a refused command may create there.
	lockFile := func(p string) bool { b := filepath.Base(p); return b == "lock" || b == "readers" }
	metaPath := func(rd string) string { return filepath.Join(rd, "replica.json") }
	truncate := func(t *testing.T, p string, by int64) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()-by); err != nil {
			t.Fatal(err)
		}
	}
	traversal := func(t *testing.T, rd string) []string {
		m := readMeta(t, rd)
		pointDisk(m, 1, 0)["chain"].([]any)[0] = "../../../../../escape.vhdx"
		writeMeta(t, rd, m)
		return []string{metaPath(rd), `file name "../../../../../escape.vhdx"`, "contains a path separator"}
	}
	cases := []replicaCase{
		{name: "truncated replica.json, points by VM name", args: []string{"points", replicaJob, "web01"},
			damage: func(t *testing.T, rd string) []string {
				fi, _ := os.Stat(metaPath(rd))
				truncate(t, metaPath(rd), fi.Size()/2)
				return []string{metaPath(rd), fmt.Sprintf("at byte %d", fi.Size()-fi.Size()/2), "damaged"}
			}},
		{name: "truncated replica.json, writer lock",
			damage: func(t *testing.T, rd string) []string {
				fi, _ := os.Stat(metaPath(rd))
				truncate(t, metaPath(rd), fi.Size()/2)
				return []string{metaPath(rd), fmt.Sprintf("at byte %d", fi.Size()-fi.Size()/2), "damaged"}
			}},
		{name: "unknown metadata version, verify", args: []string{"verify", replicaJob, replicaVM},
			damage: func(t *testing.T, rd string) []string {
				m := readMeta(t, rd)
				m["version"] = 99
				writeMeta(t, rd, m)
				return []string{metaPath(rd), "version 99 is not supported"}
			}},
		{name: "point's chain member missing, failover", args: []string{"failover", replicaJob, "web01", "--out", "OUT/web01.img"},
			damage: func(t *testing.T, rd string) []string {
				// The second disk's base: the first disk is written before
				// the failure, and must be removed again.
				chain := pointDisk(readMeta(t, rd), 1, 1)["chain"].([]any)
				gone := filepath.Join(rd, "disks", "data", chain[len(chain)-1].(string))
				if err := os.Remove(gone); err != nil {
					t.Fatal(err)
				}
				return []string{"disk data", fmt.Sprintf("chain member %d of %d (%s) is missing", len(chain), len(chain), gone)}
			}},
		{name: "digest file of the wrong size, verify", args: []string{"verify", replicaJob, replicaVM},
			damage: func(t *testing.T, rd string) []string {
				sums := filepath.Join(rd, "digests", "boot", pointDisk(readMeta(t, rd), 1, 0)["digests"].(string))
				truncate(t, sums, 5)
				fi, _ := os.Stat(sums)
				return []string{sums, fmt.Sprintf("at byte %d: file is %d bytes", fi.Size(), fi.Size()), "disk boot"}
			}},
		{name: "chain path with .., points", args: []string{"points", replicaJob, replicaVM}, damage: traversal},
		{name: "chain path with .., writer lock", damage: traversal},
		{name: "points of the wrong JSON type, failover", args: []string{"failover", replicaJob, replicaVM, "--out", "OUT/web01.vhdx"},
			damage: func(t *testing.T, rd string) []string {
				m := readMeta(t, rd)
				m["points"] = "many"
				writeMeta(t, rd, m)
				return []string{metaPath(rd), "field points", "at byte"}
			}},
		{name: "point id with a path separator, verify --point", args: []string{"verify", replicaJob, replicaVM, "--point", "../x"},
			damage: func(t *testing.T, rd string) []string {
				m := readMeta(t, rd)
				m["points"].([]any)[0].(map[string]any)["id"] = "../x"
				writeMeta(t, rd, m)
				return []string{metaPath(rd), `point name "../x"`}
			}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dataDir := filepath.Join(top, fmt.Sprintf("case%02d", i))
			store := filepath.Join(dataDir, "replicas")
			out := filepath.Join(dataDir, "out")
			work := filepath.Join(dataDir, "cwd")
			copyTree(t, pristine, store)
			for _, d := range []string{out, work} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			rd := filepath.Join(store, replicaJob, replicaVM)
			want := c.damage(t, rd)
			// Damaged files are neither repaired nor collected as garbage:
			// the whole datastore stays as it is, lock files aside.
			check := watch(t, watched{roots: []string{root}, skip: []string{store}, store: store, allowInStore: lockFile})
			if c.args == nil {
				st, err := replica.Open(store)
				if err != nil {
					t.Fatal(err)
				}
				r, err := st.Replica(replicaJob, replicaVM)
				if err != nil {
					t.Fatal(err)
				}
				w, err := r.Lock(context.Background(), "badinput")
				if err == nil {
					w.Close()
					t.Fatal("the writer lock was taken on damaged metadata")
				}
				var me *replica.MetadataError
				if !errors.As(err, &me) || me.Path != metaPath(rd) {
					t.Errorf("error %v is not a *replica.MetadataError naming %s", err, metaPath(rd))
				}
				requireAll(t, "the error", err.Error(), want...)
			} else {
				args := append([]string(nil), c.args...)
				for k, a := range args {
					args[k] = strings.Replace(a, "OUT/", out+string(filepath.Separator), 1)
				}
				res := runStarterBin(t, starter, work, append(args, "--data-dir", dataDir)...)
				t.Logf("starter %s: %s", args[0], strings.TrimSpace(res.stderr))
				if res.code != 1 {
					t.Errorf("exit code %d, want 1\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
				}
				requireAll(t, "stderr", res.stderr, want...)
				if c.args[0] == "points" && res.stdout != "" {
					t.Errorf("points listed something from damaged metadata:\n%s", res.stdout)
				}
			}
			// failover never leaves a file presented as a disk, nor a temporary one.
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("files left in the --out folder: %v", left)
			}
			check()
		})
	}
}

// ---- hostile clients of the agent's data channel ----

const (
	agentJob  = "demo"
	agentVM   = "vm-1"
	agentDisk = "disk0"
	agentCP   = "cp-1"
	agentBS   = 64 << 10
	agentSize = 1 << 20
)

// agentLog collects the agent's log lines.
type agentLog struct{ testkit.SyncBuffer }

// lineWith waits for the agent's log line about the connection from addr:
// the receiver writes one when it is done with a connection.
func (l *agentLog) lineWith(t *testing.T, addr string) string {
	t.Helper()
	var found string
	testkit.Eventually(t, 15*time.Second, 20*time.Millisecond, func() error {
		text := l.String()
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "remote="+addr+" ") || strings.Contains(line, `remote="`+addr+`"`) {
				found = line
				return nil
			}
		}
		return fmt.Errorf("the agent logged nothing about the connection from %s:\n%s", addr, text)
	})
	return found
}

// agentToken is the session token BeginRestorePoint gave the fixture's point.
var agentToken string

func goodHello() transfertest.Hello {
	return transfertest.Hello{DiskSize: agentSize, BlockSize: agentBS, Job: agentJob, VM: agentVM, Disk: agentDisk, Checkpoint: agentCP, Token: agentToken}
}

// agentFixture is an agent with one open restore point whose disk holds its
// first block durably.
type agentFixture struct {
	addr       string
	datastore  string
	agent      *agent.Agent
	proxyTLS   *tls.Config
	log        *agentLog
	content    []byte // what the source disk holds
	replicaDir string
}

// goodFrame is block i of the content, uncompressed.
func (fx *agentFixture) goodFrame(i int64) transfertest.Frame {
	raw := fx.content[i*agentBS : (i+1)*agentBS]
	return transfertest.Frame{Offset: i * agentBS, RawLen: agentBS, PayloadLen: agentBS, Sum: digest.Of(raw), Payload: raw}
}

func (fx *agentFixture) dial(t *testing.T, conf *tls.Config) *transfertest.Conn {
	t.Helper()
	return transfertest.Dial(t, fx.addr, conf)
}

// foreignClientTLS presents a client certificate of a CA the agent does not
// know (generated here with crypto/x509), and trusts the agent's CA.
func foreignClientTLS(t *testing.T, roots *x509.CertPool) *tls.Config {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "replicator CA", Organization: []string{"replicator"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	// Presented whatever CAs the agent says it accepts (a plain Certificates
	// list would be withheld, and the case would test no certificate instead).
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}
}

// startAgent starts an agent over a real listener with mutual TLS, opens a
// restore point for checkpoint cp-1 and sends the disk's first block, which
// the agent makes durable.
func startAgent(t *testing.T, dir string) *agentFixture {
	t.Helper()
	files, err := pki.EnsureDev(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := files.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	proxyTLS, err := files.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	fx := &agentFixture{datastore: filepath.Join(dir, "datastore"), proxyTLS: proxyTLS, log: &agentLog{}}
	if fx.agent, err = agent.New(fx.datastore, "badinput agent"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := fx.agent.Prepare(ctx, agentJob, contract.VM{ID: agentVM, Name: "vm1", Generation: 2,
		Disks: []contract.Disk{{ID: agentDisk, VirtualSize: agentSize, SectorSize: 512}}}); err != nil {
		t.Fatal(err)
	}
	begun, err := fx.agent.Begin(ctx, contract.BeginInput{Job: agentJob, VMID: agentVM, RunID: "run-1", CheckpointID: agentCP,
		ChangeTracking: "full", BlockSize: agentBS})
	if err != nil {
		t.Fatal(err)
	}
	agentToken = begun.Token
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.addr = ln.Addr().String()
	t.Cleanup(func() { fx.agent.Close() }) // after the data channel stopped: cleanups run last first
	transfertest.Serve(t, transfer.NewReceiver(fx.agent, serverTLS, transfer.ReceiverOptions{
		PersistBytes: 1, // every frame is made durable and acknowledged
		Logger:       slog.New(slog.NewTextHandler(fx.log, nil)),
	}), ln)

	fx.content = make([]byte, agentSize)
	for i := range fx.content {
		fx.content[i] = byte(i*131 + i>>9 + 7)
	}
	c := fx.dial(t, proxyTLS)
	c.Write(goodHello().Encode())
	if resume, refusal := c.HelloReply(t); resume != 0 {
		t.Fatalf("a new restore point resumes from %d (%s)", resume, refusal)
	}
	c.Write(fx.goodFrame(0).Encode())
	if typ, body, err := c.Read(); err != nil || typ != 'A' || int64(binary.BigEndian.Uint64(body)) != agentBS {
		t.Fatalf("the first block was not acknowledged: %q %x %v", typ, body, err)
	}
	c.Close()
	fx.log.lineWith(t, c.LocalAddr().String())
	fx.replicaDir = filepath.Join(fx.datastore, agentJob, agentVM)
	return fx
}

// durablePosition is the disk's position as replica.json records it.
func (fx *agentFixture) durablePosition(t *testing.T) int64 {
	t.Helper()
	sess, ok := readMeta(t, fx.replicaDir)["session"].(map[string]any)
	if !ok {
		t.Fatal("the open restore point is gone from replica.json")
	}
	return int64(sess["disks"].([]any)[0].(map[string]any)["position"].(float64))
}

// requireContinues checks that the open point still continues from the
// first block: the durable position, the agent's view of it, and what a new
// connection is told to resume from.
func (fx *agentFixture) requireContinues(t *testing.T) {
	t.Helper()
	if p := fx.durablePosition(t); p != agentBS {
		t.Errorf("durable position %d in replica.json, want %d", p, agentBS)
	}
	pos, err := fx.agent.Positions(context.Background(), agentJob, agentVM)
	if err != nil || pos[agentDisk] != agentBS {
		t.Errorf("agent positions %v, %v; want %s at %d", pos, err, agentDisk, agentBS)
	}
	c := fx.dial(t, fx.proxyTLS)
	c.Write(goodHello().Encode())
	if resume, refusal := c.HelloReply(t); resume != agentBS {
		t.Errorf("a new connection resumes from %d (%s), want %d", resume, refusal, agentBS)
	}
	c.Close()
	fx.log.lineWith(t, c.LocalAddr().String())
}

type agentCase struct {
	name string
	// Exactly one of these says what the client does:
	garbage []byte                                    // plain TCP bytes instead of TLS
	tlsConf func(fx *agentFixture) *tls.Config        // a handshake the agent must refuse
	hello   *transfertest.Hello                       // a Hello the agent must refuse
	first   func(fx *agentFixture) []byte             // a first message that is no Hello
	frame   func(fx *agentFixture) transfertest.Frame // a frame after a good Hello
	// want is what the client is told (the agent's 'E' message, or the
	// client's TLS error); log is what the agent's log line says.
	want, log []string
}

func badHello(edit func(h *transfertest.Hello)) *transfertest.Hello {
	h := goodHello()
	edit(&h)
	return &h
}

func badAgentClients(t *testing.T, root string) {
	fx := startAgent(t, filepath.Join(root, "agent"))
	roots := fx.proxyTLS.RootCAs // the stranger trusts the agent; the agent does not trust it
	tamper := func(f transfertest.Frame, edit func(f *transfertest.Frame)) transfertest.Frame { edit(&f); return f }
	longHello := badHello(func(h *transfertest.Hello) { h.VM = strings.Repeat("v", 60<<10) })
	cases := []agentCase{
		{name: "client without a certificate",
			tlsConf: func(fx *agentFixture) *tls.Config { c := fx.proxyTLS.Clone(); c.Certificates = nil; return c },
			want:    []string{"certificate required"}, log: []string{"TLS handshake refused", "didn't provide a certificate"}},
		{name: "client certificate from another CA",
			tlsConf: func(fx *agentFixture) *tls.Config { return foreignClientTLS(t, roots) },
			want:    []string{"unknown certificate authority"}, log: []string{"TLS handshake refused", "certificate signed by unknown authority"}},
		{name: "plain TCP garbage", garbage: []byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n"),
			log: []string{"TLS handshake refused", "does not look like a TLS handshake"}},
		{name: "hello with job ..", hello: badHello(func(h *transfertest.Hello) { h.Job = ".." }), want: []string{`job name ".."`}},
		{name: "hello with VM a/b", hello: badHello(func(h *transfertest.Hello) { h.VM = "a/b" }), want: []string{`vm name "a/b"`, `contains a path separator`}},
		{name: `hello with disk ..\x`, hello: badHello(func(h *transfertest.Hello) { h.Disk = `..\x` }), want: []string{`disk name "..\\x"`}},
		{name: "hello with an absolute job path", hello: badHello(func(h *transfertest.Hello) { h.Job = "/etc/cron.d" }), want: []string{`job name "/etc/cron.d"`}},
		{name: "hello with NUL in the disk name", hello: badHello(func(h *transfertest.Hello) { h.Disk = "disk0\x00/../../x" }), want: []string{`disk name "disk0\x00/../../x"`}},
		{name: "hello with NUL in the checkpoint", hello: badHello(func(h *transfertest.Hello) { h.Checkpoint = "cp-1\x00../../x" }), want: []string{`checkpoint name "cp-1\x00../../x"`, "control character"}},
		{name: "hello with an absurd block size", hello: badHello(func(h *transfertest.Hello) { h.BlockSize = 1 << 40 }), want: []string{"block size 1099511627776"}},
		{name: "hello with a negative disk size", hello: badHello(func(h *transfertest.Hello) { h.DiskSize = -1 }), want: []string{"disk size -1"}},
		{name: "hello with a 60 KiB name", hello: longHello,
			want: []string{fmt.Sprintf("hello message of %d bytes exceeds 4096", len(longHello.Encode())-5)}},
		{name: "data frame before any hello", first: func(fx *agentFixture) []byte { return fx.goodFrame(1).Encode() },
			want: []string{`first message is 'D', want hello`}},
		{name: "hello that is not a replicator client", hello: badHello(func(h *transfertest.Hello) { h.Magic, h.OverrideMagic = "HTTP", true }), want: []string{`magic "HTTP"`}},
		{name: "hello of an unknown protocol version", hello: badHello(func(h *transfertest.Hello) { h.Version, h.OverrideVersion = 77, true }), want: []string{"protocol version 77"}},
		{name: "hello of a sender without session tokens", hello: badHello(func(h *transfertest.Hello) { h.Version, h.OverrideVersion = 2, true }),
			want: []string{"protocol version 2 unsupported", "predates session tokens"}},
		{name: "hello without a session token", hello: badHello(func(h *transfertest.Hello) { h.Token = "" }),
			want: []string{"session token: 0 characters"}},
		{name: "hello with a wrong session token", hello: badHello(func(h *transfertest.Hello) { h.Token = strings.Repeat("0", 64) }),
			want: []string{"session token refused for the restore point of checkpoint cp-1"}},
		{name: "hello with the wrong block size", hello: badHello(func(h *transfertest.Hello) { h.BlockSize = 2 * agentBS }),
			want: []string{fmt.Sprintf("has %d-byte blocks, the sender says %d", agentBS, 2*agentBS)}},
		{name: "hello for a VM with no replica", hello: badHello(func(h *transfertest.Hello) { h.Job, h.VM = "other", "vm-9" }),
			want: []string{"no open restore point for checkpoint cp-1 of other/vm-9"}},
		{name: "hello for a checkpoint with no open restore point", hello: badHello(func(h *transfertest.Hello) { h.Checkpoint = "cp-9" }),
			want: []string{"no open restore point for checkpoint cp-9"}},
		{name: "hello with the wrong disk size", hello: badHello(func(h *transfertest.Hello) { h.DiskSize = 2 * agentSize }),
			want: []string{"disk disk0", "is 1048576 bytes on the replica, the sender says 2097152"}},
		{name: "frame offset beyond the disk",
			frame: func(fx *agentFixture) transfertest.Frame {
				return tamper(fx.goodFrame(1), func(f *transfertest.Frame) { f.Offset = agentSize + agentBS })
			}, want: []string{fmt.Sprintf("frame offset %d outside the disk of %d bytes", agentSize+agentBS, agentSize)}},
		{name: "frame payload larger than the block",
			frame: func(fx *agentFixture) transfertest.Frame {
				return tamper(fx.goodFrame(1), func(f *transfertest.Frame) { f.PayloadLen++; f.Payload = append(f.Payload, 0) })
			}, want: []string{fmt.Sprintf("frame at offset %d: payload of %d bytes for %d raw bytes", agentBS, agentBS+1, agentBS)}},
		{name: "frame declaring a 4 GiB message",
			frame: func(fx *agentFixture) transfertest.Frame {
				return tamper(fx.goodFrame(1), func(f *transfertest.Frame) { f.BodyLen = 0xfffffff0; f.Payload = nil })
			}, want: []string{fmt.Sprintf("data frame after offset %d: length %d outside", agentBS, uint32(0xfffffff0))}},
		{name: "frame checksum does not match its payload",
			frame: func(fx *agentFixture) transfertest.Frame {
				return tamper(fx.goodFrame(1), func(f *transfertest.Frame) {
					f.Payload = append([]byte(nil), f.Payload...)
					f.Payload[100] ^= 1
				})
			}, want: []string{fmt.Sprintf("frame at offset %d: checksum mismatch", agentBS)}},
		{name: "frame with an unknown codec tag",
			frame: func(fx *agentFixture) transfertest.Frame {
				return tamper(fx.goodFrame(1), func(f *transfertest.Frame) { f.Codec = 9 })
			}, want: []string{fmt.Sprintf("frame at offset %d: codec tag 9 unknown", agentBS)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A refused stream changes nothing in the datastore: not the
			// open point's files, not its durable position.
			check := watch(t, watched{roots: []string{root}, skip: []string{fx.datastore}, store: fx.datastore})
			var said, local string
			switch {
			case c.garbage != nil:
				conn, err := net.DialTimeout("tcp", fx.addr, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				local = conn.LocalAddr().String()
				conn.Write(c.garbage)
				conn.SetReadDeadline(time.Now().Add(15 * time.Second))
				got, err := io.ReadAll(conn)
				if err != nil {
					t.Errorf("the agent did not close the connection: %v", err)
				}
				if len(got) > 0 && got[0] != 0x15 { // at most a TLS alert record
					t.Errorf("the agent answered plain TCP with %q", got)
				}
				conn.Close()
			case c.tlsConf != nil:
				raw, err := net.DialTimeout("tcp", fx.addr, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				local = raw.LocalAddr().String()
				conf := c.tlsConf(fx).Clone()
				conf.ServerName = "127.0.0.1"
				conn := tls.Client(raw, conf)
				conn.SetDeadline(time.Now().Add(15 * time.Second))
				if err = conn.Handshake(); err == nil {
					// TLS 1.3: the client's handshake ends before the agent
					// checks its certificate; the refusal comes with the
					// first read.
					conn.Write(goodHello().Encode())
					_, err = conn.Read(make([]byte, 1))
				}
				conn.Close()
				if err == nil {
					t.Fatal("the agent answered a client it must refuse")
				}
				said = err.Error()
			case c.hello != nil || c.first != nil:
				conn := fx.dial(t, fx.proxyTLS)
				local = conn.LocalAddr().String()
				if c.first != nil {
					conn.Write(c.first(fx))
				} else {
					conn.Write(c.hello.Encode())
				}
				said = conn.AgentError(t)
				conn.Close()
			default:
				conn := fx.dial(t, fx.proxyTLS)
				local = conn.LocalAddr().String()
				conn.Write(goodHello().Encode())
				if resume, refusal := conn.HelloReply(t); resume != agentBS {
					t.Fatalf("hello: resume %d (%s), want %d", resume, refusal, agentBS)
				}
				conn.Write(c.frame(fx).Encode())
				said = conn.AgentError(t)
				conn.Close()
			}
			t.Logf("the client was told: %s", said)
			requireAll(t, "what the client was told", said, c.want...)
			if local != "" {
				// The agent is done with the connection once it logged it.
				requireAll(t, "the agent's log", fx.log.lineWith(t, local), c.log...)
			} else if len(c.log) > 0 {
				t.Fatal("no connection to find in the agent's log")
			}
			check()
			fx.requireContinues(t)
		})
	}

	// After every refusal the open point continues from its durable
	// position: the rest of the disk is sent, committed and verified.
	t.Run("open point continues after the refusals", func(t *testing.T) {
		conn := fx.dial(t, fx.proxyTLS)
		conn.Write(goodHello().Encode())
		if resume, refusal := conn.HelloReply(t); resume != agentBS {
			t.Fatalf("resume %d (%s), want %d", resume, refusal, agentBS)
		}
		var msgs []byte
		for i := int64(1); i < agentSize/agentBS; i++ {
			msgs = append(msgs, fx.goodFrame(i).Encode()...)
		}
		msgs = append(msgs, transfertest.Msg('F', binary.BigEndian.AppendUint64(nil, uint64(agentSize/agentBS-1)))...)
		conn.Write(msgs)
		for {
			typ, body, err := conn.Read()
			if err != nil {
				t.Fatalf("no done reply: %v", err)
			}
			if typ == 'E' {
				t.Fatalf("the agent refused the rest of the disk: %s", transfertest.ErrorText(t, body))
			}
			if typ == 'G' {
				if p := int64(binary.BigEndian.Uint64(body)); p != agentSize {
					t.Fatalf("done at %d, want %d", p, agentSize)
				}
				break
			}
		}
		conn.Close()
		fx.log.lineWith(t, conn.LocalAddr().String())
		ctx := context.Background()
		point, err := fx.agent.Commit(ctx, agentJob, agentVM, agentCP, 7)
		if err != nil {
			t.Fatal(err)
		}
		r, err := fx.agent.Store().Replica(agentJob, agentVM)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Verify(ctx, point); err != nil {
			t.Fatalf("verify %s: %v", point, err)
		}
		img, err := r.OpenPoint(point, agentDisk)
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		got := make([]byte, agentSize)
		if _, err := img.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fx.content) {
			t.Fatal("the restore point does not hold what was sent")
		}
	})
}

// ---- malformed job configurations given to the worker ----

// runWorker runs the worker's command line in-process and returns its exit
// code and what it wrote to stderr.
func runWorker(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldStderr, oldLog := os.Stderr, slog.Default()
	os.Stderr = w
	var buf bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&buf, r); close(copied) }()
	done := make(chan int, 1)
	go func() { done <- run(args) }()
	var code int
	select {
	case code = <-done:
	case <-time.After(time.Minute):
		os.Stderr = oldStderr
		t.Fatal("the worker did not exit on a bad configuration: it runs")
	}
	os.Stderr = oldStderr
	slog.SetDefault(oldLog)
	w.Close()
	<-copied
	r.Close()
	return code, buf.String()
}

// lineOf is the line of text where needle first stands.
func lineOf(t *testing.T, text, needle string) int {
	t.Helper()
	i := strings.Index(text, needle)
	if i < 0 {
		t.Fatalf("%q not in the configuration", needle)
	}
	return strings.Count(text[:i], "\n") + 1
}

type configCase struct {
	name string
	// edit turns the valid configuration into the bad one.
	edit func(valid string) string
	// problems: each is "key path: reason" and the text of the line the
	// key stands on, whose line number the problem must name.
	problems [][2]string
	// syntax: the YAML cannot be parsed; the error names the file and the
	// line of this text.
	syntax string
}

func badConfigs(t *testing.T, root string) {
	top := filepath.Join(root, "config")
	if err := os.MkdirAll(top, 0o755); err != nil {
		t.Fatal(err)
	}
	// A valid configuration: every path it names lies under dir, none exists
	// yet, and Temporal is unreachable, so that a configuration let through
	// would show by files appearing or by the exit code.
	valid := func(dir string) string {
		return fmt.Sprintf(`temporal: {address: "127.0.0.1:1"}
hosts:
  - {name: hv01, provider: lab, path: %q}
targets:
  - {name: dr01, address: "127.0.0.1:2"}
agent: {name: dr01, listen: "127.0.0.1:0", datastore: %q}
jobs:
  - name: demo
    source: hv01
    target: dr01
    compression: optimal
    window: 0
    blockSize: 1MiB
    retention: 7
`, filepath.Join(dir, "lab"), filepath.Join(dir, "replicas"))
	}
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				panic("no " + old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	cases := []configCase{
		{name: "unknown compression level", edit: replace("compression: optimal", "compression: ultra"),
			problems: [][2]string{{`jobs[0].compression: unknown compression "ultra": want one of none, fast, optimal, high, extreme`, "compression: ultra"}}},
		{name: "negative window", edit: replace("window: 0", "window: -30m"),
			problems: [][2]string{{"jobs[0].window: negative (-30m0s)", "window: -30m"}}},
		{name: "source host that does not exist", edit: replace("source: hv01", "source: hv09"),
			problems: [][2]string{{`jobs[0].source: no host named "hv09" in hosts`, "source: hv09"}}},
		{name: "job name with a path separator", edit: replace("name: demo", "name: ../etc"),
			problems: [][2]string{{`jobs[0].name: name "../etc" contains a path separator`, "name: ../etc"}}},
		{name: "YAML syntax error", edit: replace("retention: 7", "retention: 7: 8"), syntax: "retention: 7: 8"},
		{name: "block size not a power of two", edit: replace("blockSize: 1MiB", "blockSize: 3MiB"),
			problems: [][2]string{{"jobs[0].blockSize: 3MiB (3145728 bytes) is not a power of two", "blockSize: 3MiB"}}},
		{name: "retention zero", edit: replace("retention: 7", "retention: 0"),
			problems: [][2]string{{"jobs[0].retention: 0: want at least 1 restore point", "retention: 0"}}},
		{name: "duplicate job names", edit: func(s string) string { return s + "  - {name: demo, source: hv01, target: dr01}\n" },
			problems: [][2]string{{`jobs[1].name: duplicate name "demo" (also jobs[0])`, "- {name: demo"}}},
		{name: "several problems, all listed in file order",
			edit: func(s string) string {
				s = replace("compression: optimal", "compression: zip")(s)
				s = replace("window: 0", "window: forever")(s)
				return replace("retention: 7", "retention: -1")(s)
			},
			problems: [][2]string{
				{`jobs[0].compression: unknown compression "zip"`, "compression: zip"},
				{"jobs[0].window:", "window: forever"},
				{"jobs[0].retention: -1: want at least 1 restore point", "retention: -1"},
			}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(top, fmt.Sprintf("case%02d", i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			text := c.edit(valid(dir))
			file := filepath.Join(dir, "replicator.yaml")
			if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			check := watch(t, watched{roots: []string{root}})
			code, stderr := runWorker(t, "--config", file, "--roles", "jobs")
			t.Logf("workers: %s", strings.TrimSpace(stderr))
			if code != 2 {
				t.Errorf("exit code %d, want 2 (a bad configuration fails at start)\n%s", code, stderr)
			}
			if c.syntax != "" {
				requireAll(t, "stderr", stderr, "config "+file+": yaml: ", fmt.Sprintf("line %d:", lineOf(t, text, c.syntax)))
			} else {
				requireAll(t, "stderr", stderr, fmt.Sprintf("invalid configuration %s: %d problem", file, len(c.problems)))
				last := -1
				for _, p := range c.problems {
					line := lineOf(t, text, p[1])
					requireAll(t, "stderr", stderr, p[0], fmt.Sprintf("(line %d)", line))
					if at := strings.Index(stderr, p[0]); at < last {
						t.Errorf("%q is not listed in the order of the file", p[0])
					} else {
						last = at
					}
				}
			}
			// Nothing was started: no datastore, no lab folder.
			for _, p := range []string{"replicas", "lab"} {
				if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
					t.Errorf("%s created from a bad configuration", filepath.Join(dir, p))
				}
			}
			check()
		})
	}
}

// ---- malformed workflow inputs, through a real Temporal server ----

type workflowCase struct {
	name string
	// input is what ReplicationWorkflow is started with, by its type name,
	// as any Temporal client would (the SDK encodes it as JSON).
	input any
	want  []string
}

// awaitClosed waits until the workflow closes. A workflow task that fails (a
// panic in workflow code, an undecodable input turned into a task failure)
// is retried by Temporal for ever: it fails the case at once instead.
func awaitClosed(t *testing.T, c client.Client, id string, limit time.Duration) enumspb.WorkflowExecutionStatus {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	for {
		desc, err := c.DescribeWorkflowExecution(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		status := desc.GetWorkflowExecutionInfo().GetStatus()
		iter := c.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for iter.HasNext() {
			ev, err := iter.Next()
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_FAILED {
				c.TerminateWorkflow(ctx, id, "", "bad-input test: workflow task failed")
				t.Fatalf("a workflow task failed instead of the run ending: %s", ev.GetWorkflowTaskFailedEventAttributes().GetFailure().GetMessage())
			}
		}
		if status != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			return status
		}
		if time.Now().After(deadline) {
			c.TerminateWorkflow(ctx, id, "", "bad-input test: did not end")
			t.Fatalf("the run did not end within %s", limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func badWorkflowInputs(t *testing.T, root string) {
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, nil)
	tree := filepath.Dir(h.dir) // the harness's whole temporary tree
	// A job's settings as a run that continued as new carries them: a
	// client can send them too, with names no configuration would allow.
	forgedSpec := map[string]any{"name": "../../etc", "source": "hv01", "target": "dr01", "targetAddress": h.cfg.Targets[0].Address,
		"vms": []string{"*"}, "compression": "optimal", "blockSize": 1 << 20, "changeTracking": "full", "retention": 7, "parallelism": 1}
	cases := []workflowCase{
		{name: "empty job name", input: map[string]any{"job": ""}, want: []string{`input needs a job name: {"job": "NAME"}`}},
		{name: "unknown job", input: map[string]any{"job": "nosuch"}, want: []string{`job "nosuch" is not configured (jobs: [demo])`}},
		{name: "job name with path traversal", input: map[string]any{"job": "../../etc"}, want: []string{`job "../../etc" is not configured`}},
		{name: "VM name with path traversal", input: map[string]any{"job": "demo", "vms": []string{"../x"}},
			want: []string{`VM \"../x\" not found on host hv01`}},
		{name: "VM list naming no VM that exists", input: map[string]any{"job": "demo", "vms": []string{"ghost1", "ghost2"}},
			want: []string{`VM \"ghost1\" not found on host hv01`, `VM \"ghost2\" not found on host hv01`}},
		{name: "input a JSON number", input: 42,
			want: []string{"unable to decode the workflow function input", "cannot unmarshal number into Go value of type contract.ReplicationInput"}},
		{name: "input a JSON string", input: "demo",
			want: []string{"unable to decode the workflow function input", "cannot unmarshal string into Go value of type contract.ReplicationInput"}},
		{name: "vms a string instead of a list", input: map[string]any{"job": "demo", "vms": "web01"},
			want: []string{"cannot unmarshal string into Go struct field ReplicationInput.vms"}},
		{name: "job a number", input: map[string]any{"job": 7},
			want: []string{"cannot unmarshal number into Go struct field ReplicationInput.job"}},
		{name: "forged continuation without its VMs in the result", input: map[string]any{"job": "demo", "continued": map[string]any{
			"spec":    forgedSpec,
			"pending": []any{map[string]any{"id": "../../x", "name": "x", "disks": []any{map[string]any{"id": "../d", "virtualSize": 1 << 20, "sectorSize": 512}}}},
			"result":  map[string]any{"job": "demo", "status": "running", "vms": []any{}},
		}}, want: []string{"continued.pending", `VM "x" (id "../../x") is not in continued.result`}},
		{name: "forged continuation with hostile names", input: map[string]any{"job": "demo", "continued": map[string]any{
			"spec":    forgedSpec,
			"pending": []any{map[string]any{"id": "../../x", "name": "x", "disks": []any{map[string]any{"id": "../d", "virtualSize": 1 << 20, "sectorSize": 512}}}},
			"result": map[string]any{"job": "demo", "status": "running", "vms": []any{
				map[string]any{"name": "x", "id": "../../x", "status": "pending", "disks": []any{map[string]any{"id": "../d", "status": "pending"}}}}},
		}}, want: []string{`input continued.spec differs from the configuration of job "demo" in [name`}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The run must write nothing anywhere, the datastore included.
			check := watch(t, watched{roots: []string{root, tree}, skip: []string{h.cfg.Agent.Datastore, filepath.Join(h.dir, "temporal")},
				store: h.cfg.Agent.Datastore})
			ctx := context.Background()
			id := fmt.Sprintf("badinput-%02d-%d", i, time.Now().UnixNano())
			if _, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "replication"}, contract.ReplicationWorkflow, c.input); err != nil {
				t.Fatal(err)
			}
			status := awaitClosed(t, h.c, id, time.Minute)
			var res contract.ReplicationResult
			err := h.c.GetWorkflow(ctx, id, "").Get(ctx, &res)
			out, _ := json.Marshal(res)
			text := string(out)
			switch {
			case status == enumspb.WORKFLOW_EXECUTION_STATUS_FAILED && err != nil:
				text = err.Error() + "\n" + text
			case status == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED && err == nil && res.Status == contract.StatusFailed:
			default:
				t.Fatalf("run ended %s with result %s and error %v; want it failed", status, out, err)
			}
			t.Logf("the run ended %s: %s", status, text)
			requireAll(t, "the run's failure", text, c.want...)
			check()
		})
	}
}
