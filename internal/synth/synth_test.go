package synth

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// The content of a seed never changes: the benchmark figures and the
// full-copy test were measured on it. The digest was taken from the
// generators as they stood inline in bench/main.go.
func TestContentOfASeedIsFixed(t *testing.T) {
	words := strings.Fields("the of and replica block disk checkpoint server error")
	rng := rand.New(rand.NewPCG(42, 7))
	var out []byte
	for _, kind := range []int{0, 1, 2, 0, 2, 1, 1, 0} {
		p := make([]byte, 1<<20+3)
		switch kind {
		case 0:
			Text(rng, words, p)
		case 1:
			Random(rng, p)
		case 2:
			RepeatedPage(rng, p)
		}
		out = append(out, p...)
	}
	const want = "43a33d4eccf477f09a1e200d760040e014a1f3e7efd3bf686a476cb731a7ff77"
	if got := fmt.Sprintf("%x", sha256.Sum256(out)); got != want {
		t.Fatalf("content of seed 42: sha256 %s, want %s", got, want)
	}
}

func TestShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 3*4096+100)
	RepeatedPage(rng, p)
	if !bytes.Equal(p[:4096], p[4096:8192]) || !bytes.Equal(p[:100], p[3*4096:]) || bytes.Count(p[:4096], []byte{0}) > 64 {
		t.Fatal("RepeatedPage does not repeat one random page")
	}
	q := make([]byte, 21)
	Random(rng, q)
	if !bytes.Equal(q[16:], make([]byte, 5)) || bytes.Equal(q[:16], make([]byte, 16)) {
		t.Fatalf("Random: %x, want 16 random bytes and a 5-byte tail untouched", q)
	}
	r := make([]byte, 500)
	Text(rng, []string{"ab", "cd"}, r)
	for _, c := range r {
		if !strings.ContainsRune("abcd \n", rune(c)) {
			t.Fatalf("Text wrote %q", r)
		}
	}
}
