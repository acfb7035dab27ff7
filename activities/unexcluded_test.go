package activities

import (
	"reflect"
	"testing"

	"github.com/replicator/replicator/internal/disk"
)

func TestSubtract(t *testing.T) {
	ext := func(pairs ...int64) []disk.Extent {
		var out []disk.Extent
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, disk.Extent{Offset: pairs[i], Length: pairs[i+1]})
		}
		return out
	}
	for _, c := range []struct{ a, b, want []disk.Extent }{
		{ext(0, 100), nil, ext(0, 100)},
		{ext(0, 100), ext(0, 100), nil},
		{ext(0, 100), ext(10, 20), ext(0, 10, 30, 70)},
		{ext(0, 100, 200, 50), ext(50, 160), ext(0, 50, 210, 40)},
		{ext(100, 10), ext(0, 50, 200, 50), ext(100, 10)},
	} {
		if got := subtract(c.a, c.b); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v - %v = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
