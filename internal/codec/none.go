package codec

import "fmt"

// noneCompressor sends blocks as they are.
type noneCompressor struct{}

func (noneCompressor) Encode(dst, src []byte) (Tag, []byte) { return TagNone, src }
func (noneCompressor) Level() Level                         { return None }

func decodeNone(dst, payload []byte) ([]byte, error) {
	if len(payload) != len(dst) {
		return nil, fmt.Errorf("decode none: payload of %d bytes, want %d: %w", len(payload), len(dst), ErrCorrupt)
	}
	copy(dst, payload)
	return dst, nil
}
