package vhdx

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/guid"
	"github.com/replicator/replicator/internal/testkit"
)

// logFixture makes a disk with data, then leaves an active log of two
// entries in it (as a crash between log write and apply would): entry 1
// writes a 4 KiB page into block 1, entry 2 zeroes a page of block 0 and
// writes another page of block 1. It returns the path and the bytes the disk
// must read as once the log is replayed.
func logFixture(t *testing.T) (string, []byte, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "log.vhdx")
	size := int64(4 << 20)
	d, err := Create(p, CreateOptions{Size: size, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	before := make([]byte, size)
	for i := range before[:2<<20] {
		before[i] = byte(i*7 + 3)
	}
	if _, err := d.WriteAt(before[:2<<20], 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = openFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.f.Close()
	b0, b1 := entryOffset(d.bat[d.geo.payloadIndex(0)]), entryOffset(d.bat[d.geo.payloadIndex(1)])
	page := func(c byte) []byte {
		b := bytes.Repeat([]byte{c}, logSector)
		copy(b, "LEAD0000")    // leading bytes travel in the descriptor
		copy(b[4092:], "TRL!") // trailing bytes likewise
		return b
	}
	pA, pB := page(0xA1), page(0xB2)
	after := append([]byte(nil), before...)
	copy(after[1<<20+8192:], pA)
	clear(after[12288 : 12288+logSector])
	copy(after[1<<20+3*logSector:], pB)

	lg := guid.New()
	st, _ := d.f.Stat()
	e1 := buildLogEntry(lg, 41, 0, st.Size(), []logOp{{off: b1 + 8192, data: pA}})
	e2 := buildLogEntry(lg, 42, 0, st.Size(), []logOp{{off: b0 + 12288, zeroLen: logSector}, {off: b1 + 3*logSector, data: pB}})
	// A stale entry of another log must be ignored.
	stale := buildLogEntry(guid.New(), 99, 0, st.Size(), []logOp{{off: b0, zeroLen: 1 << 20}})
	lo := int64(d.hdr.LogOffset)
	for _, w := range []struct {
		off int64
		b   []byte
	}{{lo, e1}, {lo + int64(len(e1)), e2}, {lo + int64(len(e1)+len(e2)), stale}} {
		if _, err := d.f.WriteAt(w.b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.writeHeaders(func(h *header) { h.LogGUID = lg }); err != nil {
		t.Fatal(err)
	}
	return p, before, after
}

func TestLogReplayReadOnly(t *testing.T) {
	p, _, after := logFixture(t)
	orig, _ := os.ReadFile(p)
	d := mustOpen(t, p)
	requireSame(t, "replayed in memory", readAll(t, d, 1<<20), after)
	d.Close()
	now, _ := os.ReadFile(p)
	if !bytes.Equal(orig, now) {
		t.Fatal("read-only open changed the file")
	}
}

func TestLogReplayWritable(t *testing.T) {
	p, _, after := logFixture(t)
	d, err := OpenWith(p, OpenOptions{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if !d.hdr.LogGUID.IsZero() {
		t.Fatal("log still active after a writable open")
	}
	requireSame(t, "replayed into the file", readAll(t, d, 1<<20), after)
	d.Close()
	requireSame(t, "after reopen", readAll(t, mustOpen(t, p), 1<<20), after)
	qemuCheck(t, p, after)
}

// qemu replays our log entries the same way.
func TestLogReplayMatchesQemu(t *testing.T) {
	testkit.RequireTool(t, "qemu-img")
	p, _, after := logFixture(t)
	if out, err := exec.Command("qemu-img", "check", "-r", "all", "-f", "vhdx", p).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check -r all: %v\n%s", err, out)
	}
	requireSame(t, "qemu's replay", qemuRaw(t, p), after)
}

// An entry that wraps around the end of the circular log, followed by one
// at the start, replays in order; an entry flushed beyond the file's end is
// an error.
func TestLogReplayWraps(t *testing.T) {
	dir := t.TempDir()
	p, _ := smallDisk(t, dir)
	d, err := openFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.f.Close()
	b2 := entryOffset(d.bat[d.geo.payloadIndex(2)])
	want := readAll(t, d, 1<<20)
	pg1 := bytes.Repeat([]byte{0x5a}, logSector)
	pg2 := bytes.Repeat([]byte{0xc3}, logSector)
	copy(want[2<<20:], pg1)
	copy(want[2<<20+4096:], pg2)

	lg := guid.New()
	L := int64(d.hdr.LogLength)
	st, _ := d.f.Stat()
	e1pos := L - logSector
	e1 := buildLogEntry(lg, 7, e1pos, st.Size(), []logOp{{off: b2, data: pg1}})
	e2 := buildLogEntry(lg, 8, e1pos, st.Size(), []logOp{{off: b2 + 4096, data: pg2}, {off: b2, zeroLen: 4096}})
	lo := int64(d.hdr.LogOffset)
	d.f.WriteAt(e1[:logSector], lo+e1pos)
	d.f.WriteAt(e1[logSector:], lo)
	d.f.WriteAt(e2, lo+int64(len(e1))-logSector)
	if err := d.writeHeaders(func(h *header) { h.LogGUID = lg }); err != nil {
		t.Fatal(err)
	}
	// The second entry zeroes the page the first wrote.
	clear(want[2<<20 : 2<<20+4096])
	r := mustOpen(t, p)
	requireSame(t, "wrapped log", readAll(t, r, 1<<20), want)
	r.Close()

	// The same log claiming the file was flushed beyond its end.
	e3 := buildLogEntry(lg, 9, e1pos, st.Size()+(1<<30), nil)
	d.f.WriteAt(e3, lo+int64(len(e1)+len(e2))-logSector)
	var fe *FormatError
	if _, err := Open(p); !errors.As(err, &fe) || !strings.Contains(err.Error(), "flushed") {
		t.Fatalf("flushed beyond end: %v", err)
	}
}
