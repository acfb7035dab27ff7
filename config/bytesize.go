package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Byte size units. KB, MB, GB and TB are read as their binary counterparts
// (KiB, MiB, GiB, TiB): every size in this configuration is a block or buffer
// size, where a decimal megabyte is never what is meant.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	TiB ByteSize = 1 << 40
)

var byteSizeUnits = map[string]ByteSize{
	"":    1,
	"b":   1,
	"k":   KiB,
	"kb":  KiB,
	"kib": KiB,
	"m":   MiB,
	"mb":  MiB,
	"mib": MiB,
	"g":   GiB,
	"gb":  GiB,
	"gib": GiB,
	"t":   TiB,
	"tb":  TiB,
	"tib": TiB,
}

// ParseByteSize reads "1MiB", "512KiB", "4MB", "64k" or a plain number of
// bytes such as "1048576". Units are case-insensitive and may be separated
// from the number by spaces; the number must be a non-negative integer.
func ParseByteSize(s string) (ByteSize, error) {
	text := strings.TrimSpace(s)
	end := 0
	for end < len(text) && text[end] >= '0' && text[end] <= '9' {
		end++
	}
	if end == 0 {
		return 0, fmt.Errorf("invalid size %q: want a whole number with an optional unit, such as 1MiB, 512KiB or 1048576", s)
	}
	unit := strings.ToLower(strings.TrimSpace(text[end:]))
	mult, ok := byteSizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KiB, MiB, GiB or TiB)", s, text[end:])
	}
	n, err := strconv.ParseInt(text[:end], 10, 64)
	if err != nil || n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return ByteSize(n) * mult, nil
}

// String writes the size with the largest binary unit that divides it
// exactly: 1MiB, 512KiB, 1000B.
func (b ByteSize) String() string {
	for _, u := range []struct {
		size ByteSize
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// MarshalText writes the size as String does, so that YAML and JSON show "1MiB".
func (b ByteSize) MarshalText() ([]byte, error) {
	return []byte(b.String()), nil
}

// UnmarshalText reads a size as ParseByteSize does.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
