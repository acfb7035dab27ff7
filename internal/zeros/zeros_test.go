package zeros

import "testing"

func TestAll(t *testing.T) {
	if !All(nil) || !All([]byte{}) {
		t.Error("an empty buffer is all zeros")
	}
	for _, size := range []int{1, 7, 8, 9, 4096, len(chunk) - 1, len(chunk), len(chunk) + 1, 3*len(chunk) + 5} {
		b := make([]byte, size)
		if !All(b) {
			t.Errorf("%d zero bytes: All = false", size)
		}
		for _, at := range []int{0, size / 2, size - 1} {
			b[at] = 1
			if All(b) {
				t.Errorf("%d bytes with byte %d set: All = true", size, at)
			}
			b[at] = 0
		}
	}
}

func BenchmarkAll(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if !All(buf) {
			b.Fatal("not zero")
		}
	}
}
