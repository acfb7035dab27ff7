package vhdx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/replicator/replicator/internal/guid"
)

// The VHDX log (MS-VHDX section 2.3) is a circular buffer of entries. Each
// entry is a 4 KiB-sector header plus descriptors, followed by one 4 KiB data
// sector per data descriptor. An entry is valid when its checksum, GUID and
// sequence numbers agree; the active sequence is the run of consecutive valid
// entries ending at the newest one, starting at that entry's Tail.

const (
	logSector         = 4 * kib
	logEntryHeaderLen = 64
	logDescriptorLen  = 32
)

// logOp is one replayed write: data (4 KiB) or a zeroed range.
type logOp struct {
	off     int64
	data    []byte // nil for a zero descriptor
	zeroLen int64
}

func (o logOp) end() int64 {
	if o.data != nil {
		return o.off + int64(len(o.data))
	}
	return o.off + o.zeroLen
}

// fileView reads the file as it is after log replay: the replayed writes are
// applied over the bytes read, and the file reads as extended to the log's
// LastFileOffset. Safe for concurrent use.
type fileView struct {
	f    io.ReaderAt
	size int64
	ops  []logOp
}

func (v *fileView) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	want := len(p)
	if off >= v.size {
		return 0, io.EOF
	}
	if int64(want) > v.size-off {
		p = p[:v.size-off]
	}
	n, err := v.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return n, err
	}
	clear(p[n:]) // the log extended the file: reads as zero
	for _, o := range v.ops {
		lo, hi := max(o.off, off), min(o.end(), off+int64(len(p)))
		if lo >= hi {
			continue
		}
		if o.data != nil {
			copy(p[lo-off:hi-off], o.data[lo-o.off:hi-o.off])
		} else {
			clear(p[lo-off : hi-off])
		}
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

type logEntry struct {
	pos     int64 // offset inside the log
	length  int64
	tail    int64
	seq     uint64
	flushed int64
	last    int64
	ops     []logOp
}

// readLogEntry parses the entry at pos of the circular log buf; "" on success.
// budget bounds the bytes checksummed over all candidates, so that a log
// full of forged headers cannot cost time quadratic in its length.
func readLogEntry(buf []byte, pos int64, logGUID guid.GUID, fileLimit int64, budget *int64) (*logEntry, string) {
	le := binary.LittleEndian
	L := int64(len(buf))
	at := func(off int64, n int64) []byte { // n bytes at off, wrapping
		out := make([]byte, n)
		for i := int64(0); i < n; {
			p := (off + i) % L
			c := copy(out[i:], buf[p:min(L, p+n-i)])
			i += int64(c)
		}
		return out
	}
	h := buf[pos : pos+logEntryHeaderLen]
	if string(h[0:4]) != sigLogEntry {
		return nil, "no entry"
	}
	e := &logEntry{pos: pos}
	e.length = int64(le.Uint32(h[8:]))
	e.tail = int64(le.Uint32(h[12:]))
	e.seq = le.Uint64(h[16:])
	nDesc := int64(le.Uint32(h[24:]))
	var g guid.GUID
	copy(g[:], h[32:48])
	e.flushed = int64(le.Uint64(h[48:]))
	e.last = int64(le.Uint64(h[56:]))
	if e.length < logSector || e.length%logSector != 0 || e.length > L {
		return nil, fmt.Sprintf("log entry length %d invalid", e.length)
	}
	if e.tail%logSector != 0 || e.tail >= L {
		return nil, fmt.Sprintf("log entry tail %d invalid", e.tail)
	}
	if g != logGUID {
		return nil, "log entry of another log"
	}
	if e.seq == 0 {
		return nil, "log entry sequence number zero"
	}
	descSectors := divRoundUp(logEntryHeaderLen+logDescriptorLen*nDesc, logSector)
	if descSectors > e.length/logSector {
		return nil, fmt.Sprintf("log entry with %d descriptors exceeds its length %d", nDesc, e.length)
	}
	if e.flushed < 0 || e.flushed > fileLimit || e.last < 0 || e.last > fileLimit {
		return nil, "log entry file offsets absurd"
	}
	if *budget -= e.length; *budget < 0 {
		return nil, "budget"
	}
	var ent []byte
	if pos+e.length <= L {
		ent = buf[pos : pos+e.length]
	} else {
		ent = at(pos, e.length) // wraps around the end of the log
	}
	if !sealed(ent) {
		return nil, "log entry checksum mismatch"
	}
	dataSector := descSectors
	for i := int64(0); i < nDesc; i++ {
		d := ent[logEntryHeaderLen+logDescriptorLen*i:]
		fileOff := int64(le.Uint64(d[16:]))
		if le.Uint64(d[24:]) != e.seq {
			return nil, fmt.Sprintf("log descriptor %d sequence mismatch", i)
		}
		if fileOff < 0 || fileOff%logSector != 0 || fileOff < regionTable1Offset || fileOff > fileLimit {
			return nil, fmt.Sprintf("log descriptor %d file offset %d invalid", i, fileOff)
		}
		switch string(d[0:4]) {
		case sigZeroDesc:
			n := int64(le.Uint64(d[8:]))
			if n <= 0 || n%logSector != 0 || n > fileLimit-fileOff {
				return nil, fmt.Sprintf("log zero descriptor %d length %d invalid", i, n)
			}
			e.ops = append(e.ops, logOp{off: fileOff, zeroLen: n})
		case sigDataDesc:
			if (dataSector+1)*logSector > e.length {
				return nil, fmt.Sprintf("log data descriptor %d has no data sector", i)
			}
			s := ent[dataSector*logSector : (dataSector+1)*logSector]
			dataSector++
			if string(s[0:4]) != sigDataSect {
				return nil, fmt.Sprintf("log data sector %d bad signature", i)
			}
			if uint64(le.Uint32(s[4:]))<<32|uint64(le.Uint32(s[4092:])) != e.seq {
				return nil, fmt.Sprintf("log data sector %d sequence mismatch", i)
			}
			data := make([]byte, logSector)
			copy(data[0:8], d[8:16])      // LeadingBytes
			copy(data[8:4092], s[8:4092]) // Data
			copy(data[4092:], d[4:8])     // TrailingBytes
			e.ops = append(e.ops, logOp{off: fileOff, data: data})
		default:
			return nil, fmt.Sprintf("log descriptor %d bad signature", i)
		}
	}
	if dataSector*logSector != e.length {
		return nil, "log entry length does not match its descriptors"
	}
	return e, ""
}

// replayLog finds the active log sequence and returns its writes in order,
// with the FlushedFileOffset and LastFileOffset of its newest entry. No
// active sequence (nothing to replay) returns no ops.
func replayLog(path string, r io.ReaderAt, fileSize int64, h header) (ops []logOp, flushed, last int64, err error) {
	logOff, logLen := int64(h.LogOffset), int64(h.LogLength)
	if logLen == 0 || logLen%mib != 0 || logOff%mib != 0 || logOff < mib {
		return nil, 0, 0, formatErr(path, header1Offset, "log region offset %d length %d invalid", logOff, logLen)
	}
	if logLen > maxLogLength {
		return nil, 0, 0, formatErr(path, header1Offset, "log length %d exceeds %d", logLen, maxLogLength)
	}
	if logOff > fileSize || logLen > fileSize-logOff {
		return nil, 0, 0, formatErr(path, logOff, "log region (length %d) extends past end of file (%d)", logLen, fileSize)
	}
	buf := make([]byte, logLen)
	if _, err := r.ReadAt(buf, logOff); err != nil {
		return nil, 0, 0, fmt.Errorf("vhdx %s: read log at offset %d: %w", path, logOff, err)
	}
	entries := map[int64]*logEntry{}
	var byseq []*logEntry
	budget := 8*logLen + 64*mib
	for pos := int64(0); pos < logLen; pos += logSector {
		e, msg := readLogEntry(buf, pos, h.LogGUID, maxFileOffset, &budget)
		if msg == "budget" {
			return nil, 0, 0, formatErr(path, logOff+pos, "log holds too many overlapping entry candidates")
		}
		if msg != "" {
			continue
		}
		entries[pos] = e
		byseq = append(byseq, e)
	}
	sort.Slice(byseq, func(i, j int) bool { return byseq[i].seq > byseq[j].seq })
	steps := 4*len(entries) + 1024 // bounds the walks on a forged log
	for _, head := range byseq {
		// Walk from the head's tail forwards to the head.
		var seqEntries []*logEntry
		e := entries[head.tail]
		ok := e != nil && e.seq <= head.seq && head.seq-e.seq < uint64(len(entries))
		for ok {
			if steps--; steps < 0 {
				return nil, 0, 0, formatErr(path, logOff+head.pos, "log sequences too tangled to resolve")
			}
			seqEntries = append(seqEntries, e)
			if e == head {
				break
			}
			next := entries[(e.pos+e.length)%logLen]
			if next == nil || next.seq != e.seq+1 || len(seqEntries) > len(entries) {
				ok = false
				break
			}
			e = next
		}
		if !ok {
			continue
		}
		for _, se := range seqEntries {
			ops = append(ops, se.ops...)
		}
		if head.flushed > fileSize {
			return nil, 0, 0, formatErr(path, logOff+head.pos, "log says the file was flushed to %d bytes but it has %d", head.flushed, fileSize)
		}
		return ops, head.flushed, head.last, nil
	}
	return nil, 0, 0, nil
}

// buildLogEntry serializes one log entry holding the given 4 KiB page writes
// and zero ranges; tail is the log position of the sequence's first entry.
func buildLogEntry(logGUID guid.GUID, seq uint64, tail, fileSize int64, pages []logOp) []byte {
	le := binary.LittleEndian
	nDesc := int64(len(pages))
	nData := int64(0)
	for _, p := range pages {
		if p.data != nil {
			nData++
		}
	}
	descSectors := divRoundUp(logEntryHeaderLen+logDescriptorLen*nDesc, logSector)
	length := (descSectors + nData) * logSector
	b := make([]byte, length)
	copy(b[0:4], sigLogEntry)
	le.PutUint32(b[8:], uint32(length))
	le.PutUint32(b[12:], uint32(tail))
	le.PutUint64(b[16:], seq)
	le.PutUint32(b[24:], uint32(nDesc))
	copy(b[32:48], logGUID[:])
	le.PutUint64(b[48:], uint64(fileSize))
	le.PutUint64(b[56:], uint64(fileSize))
	ds := descSectors
	for i, p := range pages {
		d := b[logEntryHeaderLen+logDescriptorLen*i:]
		le.PutUint64(d[16:], uint64(p.off))
		le.PutUint64(d[24:], seq)
		if p.data == nil {
			copy(d[0:4], sigZeroDesc)
			le.PutUint64(d[8:], uint64(p.zeroLen))
			continue
		}
		copy(d[0:4], sigDataDesc)
		copy(d[4:8], p.data[4092:4096])
		copy(d[8:16], p.data[0:8])
		s := b[ds*logSector : (ds+1)*logSector]
		ds++
		copy(s[0:4], sigDataSect)
		le.PutUint32(s[4:], uint32(seq>>32))
		copy(s[8:4092], p.data[8:4092])
		le.PutUint32(s[4092:], uint32(seq))
	}
	seal(b)
	return b
}
