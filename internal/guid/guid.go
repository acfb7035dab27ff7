// Package guid converts GUIDs between their text form
// ("0FC63DAF-8483-4772-8E79-3D69D8477DE4") and the 16 bytes Microsoft and
// UEFI formats store: the first three fields little-endian, the last eight
// bytes in order (MS-DTYP 2.3.4.2 GUID packet representation; UEFI
// specification, appendix A, EFI_GUID). VHDX, GPT and the partition types of
// disk images all store GUIDs this way.
package guid

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GUID in its stored (mixed-endian) form.
type GUID [16]byte

// Parse reads "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" in either case, with
// or without surrounding braces and white space.
func Parse(s string) (GUID, error) {
	var g GUID
	t := strings.TrimSpace(s)
	if inner, ok := strings.CutPrefix(t, "{"); ok {
		if t, ok = strings.CutSuffix(inner, "}"); !ok {
			return g, fmt.Errorf("malformed GUID %q: '{' without '}'", s)
		}
	}
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return g, fmt.Errorf("malformed GUID %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	var raw [16]byte
	if _, err := hex.Decode(raw[:], []byte(t[0:8]+t[9:13]+t[14:18]+t[19:23]+t[24:36])); err != nil {
		return g, fmt.Errorf("malformed GUID %q: %w", s, err)
	}
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, nil
}

// MustParse is Parse for the constants of a format; it panics on a
// malformed GUID.
func MustParse(s string) GUID {
	g, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return g
}

// FromBytes returns the GUID stored in the first 16 bytes of b.
func FromBytes(b []byte) GUID {
	var g GUID
	copy(g[:], b[:16])
	return g
}

// String formats g in lower case, as RFC 9562 asks of output.
func (g GUID) String() string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(g[0:4]), le.Uint16(g[4:6]), le.Uint16(g[6:8]), g[8:10], g[10:16])
}

// IsZero reports whether g is the nil GUID.
func (g GUID) IsZero() bool { return g == GUID{} }

// New returns a random (version 4) GUID.
func New() GUID {
	var g GUID
	if _, err := rand.Read(g[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	// Version and variant of RFC 9562 section 5.4, in the stored layout:
	// the version is the high nibble of the third field (little-endian,
	// so byte 7), the variant the top bits of byte 8.
	g[7] = (g[7] & 0x0f) | 0x40
	g[8] = (g[8] & 0x3f) | 0x80
	return g
}

// RFC9562 returns g's bytes in the order of its text, big-endian throughout
// (RFC 9562 section 4), as Linux file systems and swap areas store UUIDs.
func (g GUID) RFC9562() [16]byte {
	r := g
	r[0], r[1], r[2], r[3] = g[3], g[2], g[1], g[0]
	r[4], r[5] = g[5], g[4]
	r[6], r[7] = g[7], g[6]
	return r
}
