// Package synth fills buffers with synthetic disk content for benchmarks and
// tests: text-like runs of words, random bytes, and a repeated 4 KiB page.
// The content is a pure function of the random source, so a seed gives the
// same bytes on every run (the figures in BENCHMARKS.md were measured on it).
package synth

import "math/rand/v2"

// Text fills p with words drawn from words, each followed by a space or, one
// time in twelve, a newline: compressible like logs and documents.
func Text(rng *rand.Rand, words []string, p []byte) {
	var t []byte
	for len(t) < len(p) {
		t = append(t, words[rng.IntN(len(words))]...)
		if rng.IntN(12) == 0 {
			t = append(t, '\n')
		} else {
			t = append(t, ' ')
		}
	}
	copy(p, t)
}

// Random fills p with random bytes, eight at a time (a tail shorter than
// eight bytes is left as it is).
func Random(rng *rand.Rand, p []byte) {
	for j := 0; j+8 <= len(p); j += 8 {
		v := rng.Uint64()
		for k := range 8 {
			p[j+k] = byte(v >> (8 * k))
		}
	}
}

// RepeatedPage fills p with one random 4 KiB page over and over: data that
// deduplicates and compresses but is not zero.
func RepeatedPage(rng *rand.Rand, p []byte) {
	page := make([]byte, 4096)
	for j := range page {
		page[j] = byte(rng.Uint32())
	}
	for j := 0; j < len(p); j += len(page) {
		copy(p[j:], page)
	}
}
