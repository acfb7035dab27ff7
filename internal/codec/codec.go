// Package codec compresses the blocks of the data channel. Every frame carries
// a one-byte tag naming the algorithm that produced it (none, s2, zstd), so the
// receiver never guesses and old tags stay readable when levels change. The
// compression level is the sender's choice alone; decoding depends only on the
// tag. Decoders never produce more than the raw length the frame declares.
package codec

import (
	"errors"
	"fmt"
	"strings"
)

// Tag names the algorithm of one frame on the wire. Values are part of the
// data-channel protocol: never renumber them.
type Tag byte

const (
	// TagNone is an uncompressed payload: the raw bytes themselves.
	TagNone Tag = 0
	// TagS2 is an S2 block (github.com/klauspost/compress/s2, block format).
	TagS2 Tag = 1
	// TagZstd is one zstd frame (RFC 8878) with its content size.
	TagZstd Tag = 2
)

// String returns the tag's name.
func (t Tag) String() string {
	switch t {
	case TagNone:
		return "none"
	case TagS2:
		return "s2"
	case TagZstd:
		return "zstd"
	}
	return fmt.Sprintf("unknown(%d)", byte(t))
}

// Level is a compression level of a job (config key jobs[].compression).
type Level int

const (
	// None sends blocks as they are.
	None Level = iota
	// Fast is S2: several GB/s per core, for fast links.
	Fast
	// Optimal is zstd at its fastest level (about zstd -1): on 2 cores it
	// compresses faster than a 1 Gbit/s link carries, with most of zstd's ratio.
	Optimal
	// High is zstd's default level (about zstd -3).
	High
	// Extreme is zstd's better-compression level (about zstd -7), for slow WAN
	// links where CPU is cheaper than bandwidth. zstd's best level costs around
	// ten times the CPU for a few percent more and is not offered.
	Extreme
)

var levelNames = [...]string{None: "none", Fast: "fast", Optimal: "optimal", High: "high", Extreme: "extreme"}

// String returns the level's configuration name.
func (l Level) String() string {
	if l >= 0 && int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// Levels lists every level, fastest first.
func Levels() []Level { return []Level{None, Fast, Optimal, High, Extreme} }

// ParseLevel reads a configuration name; the empty string means Optimal.
func ParseLevel(s string) (Level, error) {
	if s == "" {
		return Optimal, nil
	}
	for l, name := range levelNames {
		if strings.EqualFold(s, name) {
			return Level(l), nil
		}
	}
	return None, fmt.Errorf("compression level %q: want none, fast, optimal, high or extreme", s)
}

// Compressor compresses blocks. Implementations are safe for concurrent use.
type Compressor interface {
	// Encode compresses src, appending to dst[:0] when dst has room, and
	// returns the tag of the result. When compression does not pay
	// (the result would be at least incompressibleRatio of src) it returns
	// TagNone and src itself: out may alias src.
	Encode(dst, src []byte) (tag Tag, out []byte)
	// Level is the level the compressor was made for.
	Level() Level
}

// incompressible reports whether a compressed size is too close to the raw
// size to be worth the receiver's decoding time: at least 97% of it.
func incompressible(compressed, raw int) bool {
	return int64(compressed)*100 >= int64(raw)*97
}

// A block is probed before it is compressed: probeSlices slices of
// probeSliceLen bytes spread evenly over it are compressed alone, with the
// level's own compressor, and when they together do not shrink enough
// (incompressible) the whole block goes raw without being compressed. Random
// data (encrypted volumes, media, compressed archives) then costs the sender
// about 1/16 of a compression and the receiver nothing but a copy, like the
// early bail-out of zstd and S2 on incompressible input, but decided per block
// as restic and kopia decide per blob. The slices are long enough to hold
// repeats of short patterns (a 4 KiB page repeated), and more than one so
// that a block whose start is random but whose rest compresses is not
// judged by its start. A block that compresses only in parts the slices
// miss goes raw: at most what a block-sized window gains.
const (
	probeSlices   = 4
	probeSliceLen = 16 << 10
	// probeMinLen: shorter blocks are compressed without probing, a probe
	// would cost a large share of the compression it could save.
	probeMinLen = 8 * probeSliceLen
)

// worthCompressing reports whether src is worth compressing, judged from
// slices of it compressed by encode into scratch (whose capacity must be at
// least probeSliceLen plus the encoder's overhead; encode may still grow it).
func worthCompressing(src, scratch []byte, encode func(dst, src []byte) []byte) bool {
	if len(src) < probeMinLen {
		return true
	}
	step := (len(src) - probeSliceLen) / (probeSlices - 1)
	raw, packed := 0, 0
	for i := range probeSlices {
		slice := src[i*step : i*step+probeSliceLen]
		n := len(encode(scratch[:0], slice))
		if int64(n)*100 < int64(len(slice))*probeClearlyPercent {
			// One slice that shrinks this much is worth the block's
			// compression (text, code, logs: the usual case), so the rest
			// need not be probed. Whether the result is worth sending
			// compressed is decided on the result, as for any block.
			return true
		}
		packed += n
		raw += len(slice)
	}
	return !incompressible(packed, raw)
}

// probeClearlyPercent: a probe slice compressed below this share of its size
// settles that the block is worth compressing.
const probeClearlyPercent = 80

// New returns the compressor of a level. Compressors are shared: the
// encoders behind them are created once per process and pooled.
func New(l Level) (Compressor, error) {
	switch l {
	case None:
		return noneCompressor{}, nil
	case Fast:
		return s2Compressor{}, nil
	case Optimal, High, Extreme:
		return zstdCompressorFor(l)
	}
	return nil, fmt.Errorf("compression level %d unknown", int(l))
}

// ErrCorrupt is wrapped by every decoding failure: unknown tag, malformed
// payload, or a payload that does not decode to exactly the declared length.
var ErrCorrupt = errors.New("corrupt compressed frame")

// MaxEncodedLen bounds the payload a sender produces for a raw block of
// rawLen bytes: compressed payloads are smaller than the raw block (else the
// block goes raw), so a receiver may reject any payload longer than this.
func MaxEncodedLen(rawLen int) int { return rawLen }

// DecodeShared is Decode, except that a raw payload (TagNone) is returned
// itself, without a copy: the result may alias payload, and dst is then
// neither used nor required.
func DecodeShared(dst []byte, tag Tag, payload []byte, rawLen int) ([]byte, error) {
	if tag != TagNone {
		return Decode(dst, tag, payload, rawLen)
	}
	if rawLen < 0 || len(payload) != rawLen {
		return nil, fmt.Errorf("decode none: payload of %d bytes, want %d: %w", len(payload), rawLen, ErrCorrupt)
	}
	return payload, nil
}

// Decode decodes payload of the given tag into dst[:rawLen] and returns that
// slice. dst must have a capacity of at least rawLen; Decode never allocates a
// larger output, whatever the payload claims, and fails with ErrCorrupt unless
// the payload decodes to exactly rawLen bytes.
func Decode(dst []byte, tag Tag, payload []byte, rawLen int) ([]byte, error) {
	if rawLen < 0 || cap(dst) < rawLen {
		return nil, fmt.Errorf("decode %s: raw length %d exceeds buffer of %d bytes", tag, rawLen, cap(dst))
	}
	if len(payload) > MaxEncodedLen(rawLen) {
		return nil, fmt.Errorf("decode %s: payload of %d bytes for %d raw bytes: %w", tag, len(payload), rawLen, ErrCorrupt)
	}
	dst = dst[:rawLen]
	switch tag {
	case TagNone:
		return decodeNone(dst, payload)
	case TagS2:
		return decodeS2(dst, payload)
	case TagZstd:
		return decodeZstd(dst, payload)
	}
	return nil, fmt.Errorf("decode: codec tag %d unknown: %w", byte(tag), ErrCorrupt)
}
