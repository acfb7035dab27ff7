package codec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/replicator/replicator/internal/synth"
)

// blocks returns test blocks that matter on disks: text-like, random, zero,
// short, empty.
func blocks() map[string][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	text := bytes.Repeat([]byte("replicator block of a guest filesystem 0123456789 "), 1<<20/50)
	mixed := append(append([]byte{}, text[:300000]...), random[:300000]...)
	// A page of random bytes repeated: order-0 entropy says incompressible,
	// matches say otherwise.
	repeated := bytes.Repeat(random[:4096], 256)
	// Random but for text in the last quarter.
	tail := append(append([]byte{}, random[:3<<18]...), text[:1<<18]...)
	return map[string][]byte{
		"text":     text,
		"random":   random,
		"zero":     make([]byte, 1<<20),
		"mixed":    mixed,
		"repeated": repeated,
		"tail":     tail,
		"short":    []byte("abcabcabcabcabcabcabcabcabcabcabcabcabcabc"),
		"empty":    {},
	}
}

func TestRoundTripEveryLevel(t *testing.T) {
	for _, l := range Levels() {
		c, err := New(l)
		if err != nil {
			t.Fatal(err)
		}
		for name, raw := range blocks() {
			tag, out := c.Encode(make([]byte, 0, len(raw)), raw)
			if tag != TagNone && incompressible(len(out), len(raw)) {
				t.Errorf("%s/%s: tag %s with %d of %d bytes, want raw", l, name, tag, len(out), len(raw))
			}
			if l == None && tag != TagNone {
				t.Errorf("%s/%s: tag %s", l, name, tag)
			}
			if l != None && (name == "text" || name == "mixed" || name == "repeated" || name == "tail") && tag == TagNone {
				t.Errorf("%s/%s: compressible block went raw", l, name)
			}
			if name == "random" && tag != TagNone {
				t.Errorf("%s/%s: random data compressed to %d bytes (tag %s), want raw", l, name, len(out), tag)
			}
			got, err := Decode(make([]byte, len(raw)), tag, out, len(raw))
			if err != nil {
				t.Fatalf("%s/%s: %v", l, name, err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("%s/%s: round trip differs", l, name)
			}
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	raw := blocks()["text"]
	s2c, _ := New(Fast)
	zc, _ := New(Optimal)
	_, s2out := s2c.Encode(nil, raw)
	_, zout := zc.Encode(nil, raw)

	// A zstd frame of 16 MiB of zeros is tiny; declared raw length 1 MiB.
	bomb, _ := zstd.NewWriter(nil)
	zbomb := bomb.EncodeAll(make([]byte, 16<<20), nil)
	s2bomb := s2.Encode(nil, make([]byte, 16<<20))

	cases := []struct {
		name    string
		tag     Tag
		payload []byte
		rawLen  int
	}{
		{"unknown tag", Tag(9), s2out, len(raw)},
		{"none with short payload", TagNone, raw[:10], len(raw)},
		{"s2 truncated", TagS2, s2out[:len(s2out)/2], len(raw)},
		{"s2 declares other length", TagS2, s2out, len(raw) - 1},
		{"zstd truncated", TagZstd, zout[:len(zout)/2], len(raw)},
		{"zstd other length", TagZstd, zout, len(raw) + 100},
		{"zstd garbage", TagZstd, []byte("not a zstd frame at all"), 1 << 20},
		{"zstd bomb", TagZstd, zbomb, 1 << 20},
		{"s2 bomb", TagS2, s2bomb, 1 << 20},
		{"payload longer than raw", TagNone, make([]byte, 100), 50},
	}
	for _, c := range cases {
		dst := make([]byte, c.rawLen)
		_, err := Decode(dst, c.tag, c.payload, c.rawLen)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", c.name, err)
		}
	}
	if _, err := Decode(make([]byte, 10), TagNone, make([]byte, 20), 20); err == nil {
		t.Error("decode into a buffer smaller than the raw length succeeded")
	}
}

// TestDecodeBitFlips checks that damaged payloads fail or decode to the
// declared length, never panic or grow the buffer.
func TestDecodeBitFlips(t *testing.T) {
	raw := blocks()["mixed"]
	r := rand.New(rand.NewPCG(3, 4))
	for _, l := range []Level{Fast, Optimal, Extreme} {
		c, _ := New(l)
		tag, out := c.Encode(nil, raw)
		for i := 0; i < 300; i++ {
			p := append([]byte{}, out...)
			for k := 0; k < 1+r.IntN(4); k++ {
				p[r.IntN(len(p))] ^= 1 << r.IntN(8)
			}
			dst := make([]byte, len(raw))
			got, err := Decode(dst, tag, p, len(raw))
			if err == nil && len(got) != len(raw) {
				t.Fatalf("%s: decoded %d bytes without error", l, len(got))
			}
		}
	}
}

func TestParseLevel(t *testing.T) {
	for _, l := range Levels() {
		got, err := ParseLevel(l.String())
		if err != nil || got != l {
			t.Errorf("ParseLevel(%q) = %v, %v", l.String(), got, err)
		}
	}
	if l, err := ParseLevel(""); err != nil || l != Optimal {
		t.Errorf("empty level = %v, %v; want optimal", l, err)
	}
	if _, err := ParseLevel("ultra"); err == nil {
		t.Error("ParseLevel(ultra) succeeded")
	}
}

// BenchmarkEncode compresses 1 MiB blocks of text, of random bytes (which
// the probe sends raw after compressing four 16 KiB slices) and of both.
func BenchmarkEncode(b *testing.B) {
	all := blocks()
	for _, kind := range []string{"mixed", "random", "text"} {
		raw := all[kind]
		for _, l := range Levels() {
			c, _ := New(l)
			b.Run(kind+"/"+l.String(), func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				b.RunParallel(func(pb *testing.PB) {
					dst := make([]byte, 0, 2<<20)
					for pb.Next() {
						c.Encode(dst, raw)
					}
				})
			})
		}
	}
}

// BenchmarkEncodeWords compresses 1 MiB blocks of the text-like content of
// the full-copy test's disks (synth.Text over its words) at each zstd level,
// one block at a time on one goroutine, and logs what the zstd command line
// (the C library rsync uses) does at its level 1 on the same bytes in 1 MiB
// blocks, when it is installed:
//
//	go test ./internal/codec -run '^$' -bench EncodeWords -benchtime 64x
func BenchmarkEncodeWords(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 19))
	words := strings.Fields("the of and replica block disk checkpoint server error info warning request " +
		"user time value config status 200 404 GET POST /api/v1/items id name data table index log")
	const block = 1 << 20
	text := make([]byte, 64*block)
	for off := 0; off < len(text); off += block {
		synth.Text(rng, words, text[off:off+block])
	}
	for _, l := range []Level{Optimal, High} {
		c, _ := New(l)
		b.Run(l.String(), func(b *testing.B) {
			b.SetBytes(block)
			dst := make([]byte, 0, 2*block)
			for i := 0; i < b.N; i++ {
				off := i % 64 * block
				c.Encode(dst, text[off:off+block])
			}
		})
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		b.Logf("no zstd command to compare with: %v", err)
		return
	}
	path := filepath.Join(b.TempDir(), "words.raw")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command("zstd", "-b1", "-B1MiB", path).CombinedOutput()
	if err != nil {
		b.Fatalf("zstd -b1: %v: %s", err, out)
	}
	// zstd redraws its line with carriage returns: the last drawing with
	// both speeds (compression, decompression) is the result.
	result := ""
	for _, l := range strings.Split(string(out), "\r") {
		if strings.Count(l, "MB/s") == 2 {
			result = strings.TrimSpace(l)
		}
	}
	b.Logf("zstd -b1 -B1MiB on the same bytes: %s", result)
}
