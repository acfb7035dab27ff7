package codec

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstd encoders are expensive to create (tables of several MiB), so there is
// one per level per process. EncodeAll may be called concurrently: the encoder
// keeps up to GOMAXPROCS internal states and hands them out in turn.
var (
	zstdEncodersMu sync.Mutex
	zstdEncoders   = map[Level]*zstd.Encoder{}
)

var zstdLevels = map[Level]zstd.EncoderLevel{
	Optimal: zstd.SpeedFastest,
	High:    zstd.SpeedDefault,
	Extreme: zstd.SpeedBetterCompression,
}

type zstdCompressor struct {
	level Level
	enc   *zstd.Encoder
}

func zstdCompressorFor(l Level) (Compressor, error) {
	zstdEncodersMu.Lock()
	defer zstdEncodersMu.Unlock()
	if enc, ok := zstdEncoders[l]; ok {
		return zstdCompressor{level: l, enc: enc}, nil
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstdLevels[l]),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		// Checksums are the data channel's business (a digest of the raw block).
		zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder for level %s: %w", l, err)
	}
	zstdEncoders[l] = enc
	return zstdCompressor{level: l, enc: enc}, nil
}

func (c zstdCompressor) Level() Level { return c.level }

func (c zstdCompressor) encodeAll(dst, src []byte) []byte { return c.enc.EncodeAll(src, dst) }

func (c zstdCompressor) Encode(dst, src []byte) (Tag, []byte) {
	if !worthCompressing(src, dst, c.encodeAll) {
		return TagNone, src
	}
	out := c.enc.EncodeAll(src, dst[:0])
	if incompressible(len(out), len(src)) {
		return TagNone, src
	}
	return TagZstd, out
}

// The decoder is shared likewise. DecodeAll with the cap limit never writes
// past cap(dst), so a hostile frame cannot make the receiver allocate more
// than the raw length the frame header declared (and the receiver bounded).
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxWindow(64<<20),
		zstd.WithDecoderLowmem(true),
	)
})

func decodeZstd(dst, payload []byte) ([]byte, error) {
	dec, err := zstdDecoder()
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	out, err := dec.DecodeAll(payload, dst[:0:len(dst)])
	if err != nil {
		return nil, fmt.Errorf("decode zstd: %v: %w", err, ErrCorrupt)
	}
	if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
		return nil, fmt.Errorf("decode zstd: decoded %d bytes, want %d: %w", len(out), len(dst), ErrCorrupt)
	}
	return out, nil
}
