// Package digest names the per-block digest that the source and the target
// agree on: XXH3-128 of the block's bytes as they are on the replica (after
// excluded bytes are zeroed). The target records one per block of every restore
// point; the source compares against them when there is no change tracking, and
// verify re-reads a replica against them.
package digest

import (
	"encoding/hex"

	"github.com/zeebo/xxh3"
)

// Size of a Sum in bytes.
const Size = 16

// Sum is the digest of one block.
type Sum [Size]byte

// Of returns the digest of b.
func Of(b []byte) Sum {
	h := xxh3.Hash128(b).Bytes()
	return Sum(h)
}

// String returns the digest in hex.
func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// Zero returns the digest of n zero bytes.
func Zero(n int) Sum {
	return Of(make([]byte, n))
}
