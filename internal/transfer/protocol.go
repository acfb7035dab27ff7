package transfer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/names"
)

// Protocol constants.
const (
	Magic = "RPLC"
	// Version is what this sender speaks; version 2 added partial frames,
	// version 3 the session token of the restore point in the Hello.
	Version = 3
	// MinVersion is the oldest sender an agent accepts: a sender without a
	// session token cannot prove it may write the point, so older ones are
	// refused.
	MinVersion = 3

	msgHello     = 'H'
	msgHelloRep  = 'R'
	msgSums      = 'S'
	msgData      = 'D'
	msgPassed    = 'P'
	msgAck       = 'A'
	msgDone      = 'F'
	msgDoneReply = 'G'
	msgError     = 'E'

	helloWantDigests = 1
	frameZero        = 1
	framePartial     = 2 // version 2: the frame carries only some parts of the block

	errRetryable      = 1 // flags of an error message
	errReplicaDiffers = 2 // a partial frame did not give the block the source has

	digestNotAsked = 0
	digestFollow   = 1
	digestNone     = 2

	// dataHeaderLen is the fixed part of a data frame's body.
	dataHeaderLen = 8 + 4 + 1 + 1 + 4 + digest.Size
	// partsLen is what a partial frame adds before its payload: the set of
	// the block's parts it carries.
	partsLen = 8
	// maxControlLen bounds every message but data frames and sums.
	maxControlLen = 4096
	// sumsPerMessage is how many digests one 'S' message carries at most.
	sumsPerMessage = 4096

	// MinBlockSize and MaxBlockSize bound the block size a Hello may declare.
	MinBlockSize = 4096
	MaxBlockSize = 64 << 20
	// TokenLen is the length of a session token: 32 random bytes in hex.
	TokenLen = 64
)

// Hello opens the transfer of one disk of one checkpoint.
type Hello struct {
	Version      uint16
	Job          string
	VMID         string
	DiskID       string
	CheckpointID string
	DiskSize     int64
	BlockSize    int64
	WantDigests  bool
	// Token is the session token BeginRestorePoint returned for the restore
	// point of CheckpointID: it proves the sender was given this point to
	// write. It is never logged.
	Token string
}

// frame is the header of a data frame.
type frame struct {
	Offset     int64
	RawLength  uint32
	Codec      codec.Tag
	Flags      uint8
	PayloadLen uint32
	Sum        digest.Sum
	// Parts is the set of the block's parts a partial frame carries, in
	// order, as its payload; Sum is still the digest of the whole block.
	Parts blockplan.Parts
}

// bodyLen is the length of a data message's body.
func (f frame) bodyLen() uint32 {
	if f.Flags&framePartial != 0 {
		return dataHeaderLen + partsLen + f.PayloadLen
	}
	return dataHeaderLen + f.PayloadLen
}

// helloReply is the agent's answer to Hello.
type helloReply struct {
	ResumeFrom      int64
	DigestState     uint8
	DigestBlockSize int64
	DigestCount     int64
	Retryable       bool
	Err             string
}

// doneReply closes a successful transfer.
type doneReply struct {
	Position     int64
	BytesWritten int64
	Frames       int64
}

// ValidName reports whether s can name a job, VM, disk or checkpoint on the
// target: one path element on every platform the agent runs on, by the rule
// of package names.
func ValidName(kind, s string) error { return names.Check(kind, s) }

// Validate checks a Hello as the agent must before touching anything.
func (h Hello) Validate() error {
	if h.Version < MinVersion || h.Version > Version {
		if h.Version < 3 {
			return fmt.Errorf("protocol version %d unsupported (this agent speaks %d to %d): the sender predates session tokens; upgrade the proxy", h.Version, MinVersion, Version)
		}
		return fmt.Errorf("protocol version %d unsupported (this agent speaks %d to %d)", h.Version, MinVersion, Version)
	}
	if err := ValidToken(h.Token); err != nil {
		return err
	}
	for _, n := range []struct{ kind, v string }{{"job", h.Job}, {"vm", h.VMID}, {"disk", h.DiskID}, {"checkpoint", h.CheckpointID}} {
		if err := ValidName(n.kind, n.v); err != nil {
			return err
		}
	}
	if h.DiskSize <= 0 {
		return fmt.Errorf("disk size %d: must be positive", h.DiskSize)
	}
	if h.BlockSize < MinBlockSize || h.BlockSize > MaxBlockSize || h.BlockSize%512 != 0 {
		return fmt.Errorf("block size %d: want a multiple of 512 between %d and %d", h.BlockSize, MinBlockSize, MaxBlockSize)
	}
	return nil
}

// ValidToken checks the form of a session token (not whether it is right).
func ValidToken(t string) error {
	if len(t) != TokenLen {
		return fmt.Errorf("session token: %d characters, want %d (the proxy must present the token BeginRestorePoint returned)", len(t), TokenLen)
	}
	for _, c := range []byte(t) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return errors.New("session token: not lower-case hexadecimal")
		}
	}
	return nil
}

// String names the disk a Hello is about, for errors and logs.
func (h Hello) String() string {
	return fmt.Sprintf("%s/%s/%s@%s", h.Job, h.VMID, h.DiskID, h.CheckpointID)
}

// ---- encoding ----

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) i64(v int64)  { e.b = binary.BigEndian.AppendUint64(e.b, uint64(v)) }
func (e *encoder) str(s string) {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// begin starts a message; finish fills in its length.
func (e *encoder) begin(typ byte) { e.b = append(e.b[:0], typ, 0, 0, 0, 0) }
func (e *encoder) finish() []byte {
	binary.BigEndian.PutUint32(e.b[1:5], uint32(len(e.b)-5))
	return e.b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) need(n int) bool {
	if d.err != nil {
		return false
	}
	if len(d.b) < n {
		d.err = errors.New("message truncated")
		return false
	}
	return true
}
func (d *decoder) u8() uint8 {
	if b := d.bytes(1); b != nil {
		return b[0]
	}
	return 0
}
func (d *decoder) u16() uint16 {
	if b := d.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
func (d *decoder) i64() int64 {
	if b := d.bytes(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}
func (d *decoder) bytes(n int) []byte {
	if !d.need(n) {
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
func (d *decoder) str() string { return string(d.bytes(int(d.u16()))) }

// end fails when the body has bytes left over or was short.
func (d *decoder) end(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes left over", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

func encodeHello(e *encoder, h Hello) []byte {
	e.begin(msgHello)
	e.b = append(e.b, Magic...)
	e.u16(h.Version)
	var flags uint8
	if h.WantDigests {
		flags |= helloWantDigests
	}
	e.u8(flags)
	e.i64(h.DiskSize)
	e.i64(h.BlockSize)
	e.str(h.Job)
	e.str(h.VMID)
	e.str(h.DiskID)
	e.str(h.CheckpointID)
	if h.Version >= 3 {
		e.str(h.Token)
	}
	return e.finish()
}

func decodeHello(body []byte) (Hello, error) {
	d := decoder{b: body}
	if m := d.bytes(len(Magic)); d.err == nil && string(m) != Magic {
		return Hello{}, fmt.Errorf("decode hello: magic %q, want %q (not a replicator client?)", m, Magic)
	}
	var h Hello
	h.Version = d.u16()
	flags := d.u8()
	h.WantDigests = flags&helloWantDigests != 0
	h.DiskSize = d.i64()
	h.BlockSize = d.i64()
	h.Job, h.VMID, h.DiskID, h.CheckpointID = d.str(), d.str(), d.str(), d.str()
	if h.Version >= 3 {
		h.Token = d.str()
	}
	if err := d.end("hello"); err != nil {
		return Hello{}, err
	}
	if flags&^helloWantDigests != 0 {
		return Hello{}, fmt.Errorf("decode hello: unknown flags %#x", flags)
	}
	return h, nil
}

func encodeHelloReply(e *encoder, r helloReply) []byte {
	e.begin(msgHelloRep)
	e.i64(r.ResumeFrom)
	e.u8(r.DigestState)
	e.i64(r.DigestBlockSize)
	e.i64(r.DigestCount)
	e.u8(boolByte(r.Retryable))
	e.str(r.Err)
	return e.finish()
}

func decodeHelloReply(body []byte) (helloReply, error) {
	d := decoder{b: body}
	var r helloReply
	r.ResumeFrom = d.i64()
	r.DigestState = d.u8()
	r.DigestBlockSize = d.i64()
	r.DigestCount = d.i64()
	r.Retryable = d.u8() != 0
	r.Err = d.str()
	return r, d.end("hello reply")
}

// appendFrameHeader appends the message header and fixed part of a data frame.
func appendFrameHeader(b []byte, f frame) []byte {
	b = append(b, msgData)
	b = binary.BigEndian.AppendUint32(b, f.bodyLen())
	b = binary.BigEndian.AppendUint64(b, uint64(f.Offset))
	b = binary.BigEndian.AppendUint32(b, f.RawLength)
	b = append(b, byte(f.Codec), f.Flags)
	b = binary.BigEndian.AppendUint32(b, f.PayloadLen)
	b = append(b, f.Sum[:]...)
	if f.Flags&framePartial != 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(f.Parts))
	}
	return b
}

func decodeFrameHeader(h []byte) frame {
	var f frame
	f.Offset = int64(binary.BigEndian.Uint64(h[0:8]))
	f.RawLength = binary.BigEndian.Uint32(h[8:12])
	f.Codec = codec.Tag(h[12])
	f.Flags = h[13]
	f.PayloadLen = binary.BigEndian.Uint32(h[14:18])
	copy(f.Sum[:], h[18:18+digest.Size])
	return f
}

func encodeAck(e *encoder, pos, written int64) []byte {
	e.begin(msgAck)
	e.i64(pos)
	e.i64(written)
	return e.finish()
}

func decodeAck(body []byte) (pos, written int64, err error) {
	d := decoder{b: body}
	pos, written = d.i64(), d.i64()
	return pos, written, d.end("ack")
}

func encodePosition(e *encoder, typ byte, pos int64) []byte {
	e.begin(typ)
	e.i64(pos)
	return e.finish()
}

func decodePosition(body []byte, what string) (int64, error) {
	d := decoder{b: body}
	p := d.i64()
	return p, d.end(what)
}

func encodeDoneReply(e *encoder, r doneReply) []byte {
	e.begin(msgDoneReply)
	e.i64(r.Position)
	e.i64(r.BytesWritten)
	e.i64(r.Frames)
	return e.finish()
}

func decodeDoneReply(body []byte) (doneReply, error) {
	d := decoder{b: body}
	r := doneReply{Position: d.i64(), BytesWritten: d.i64(), Frames: d.i64()}
	return r, d.end("done reply")
}

// encodeError encodes an error message; flags are errRetryable and
// errReplicaDiffers (a version 1 sender reads any flag as retryable).
func encodeError(e *encoder, flags uint8, msg string) []byte {
	e.begin(msgError)
	e.u8(flags)
	e.str(msg)
	return e.finish()
}

func decodeError(body []byte) (flags uint8, msg string, err error) {
	d := decoder{b: body}
	flags = d.u8()
	msg = d.str()
	return flags, msg, d.end("error")
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// readHeader reads a message's type and body length.
func readHeader(r *bufio.Reader) (byte, uint32, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, err
	}
	return h[0], binary.BigEndian.Uint32(h[1:]), nil
}

// readBody reads a message body of n bytes into buf (grown if needed, but
// never beyond max).
func readBody(r *bufio.Reader, buf []byte, n uint32, max int, what string) ([]byte, error) {
	if int64(n) > int64(max) {
		return nil, fmt.Errorf("%s message of %d bytes exceeds %d", what, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}
