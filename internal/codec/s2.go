package codec

import (
	"fmt"

	"github.com/klauspost/compress/s2"
)

// s2Compressor is the fast level: S2 block format, stateless and allocation
// free when dst is large enough, so nothing needs pooling.
type s2Compressor struct{}

func (s2Compressor) Level() Level { return Fast }

func (s2Compressor) Encode(dst, src []byte) (Tag, []byte) {
	if need := s2.MaxEncodedLen(len(src)); need < 0 || cap(dst) < need {
		dst = make([]byte, need)
	}
	if !worthCompressing(src, dst, encodeS2) {
		return TagNone, src
	}
	out := s2.Encode(dst[:cap(dst)], src)
	if incompressible(len(out), len(src)) {
		return TagNone, src
	}
	return TagS2, out
}

// encodeS2 encodes into dst's capacity (or a new slice when it is short).
func encodeS2(dst, src []byte) []byte { return s2.Encode(dst[:cap(dst)], src) }

func decodeS2(dst, payload []byte) ([]byte, error) {
	n, err := s2.DecodedLen(payload)
	if err != nil {
		return nil, fmt.Errorf("decode s2: %v: %w", err, ErrCorrupt)
	}
	if n != len(dst) {
		return nil, fmt.Errorf("decode s2: payload declares %d bytes, frame %d: %w", n, len(dst), ErrCorrupt)
	}
	out, err := s2.Decode(dst, payload)
	if err != nil {
		return nil, fmt.Errorf("decode s2: %v: %w", err, ErrCorrupt)
	}
	if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
		return nil, fmt.Errorf("decode s2: decoded %d bytes, want %d: %w", len(out), len(dst), ErrCorrupt)
	}
	return out, nil
}
