package disk

import (
	"math"
	"reflect"
	"testing"
)

func TestMerge(t *testing.T) {
	in := []Extent{{Offset: 100, Length: 50}, {Offset: 0, Length: 10}, {Offset: 10, Length: 5}, {Offset: 120, Length: 100},
		{Offset: 300, Length: 0}, {Offset: 990, Length: 100}, {Offset: -5, Length: 3}, {Offset: 500, Length: math.MaxInt64}}
	orig := append([]Extent(nil), in...)
	got := Merge(in, 1000)
	want := []Extent{{Offset: 0, Length: 15}, {Offset: 100, Length: 120}, {Offset: 500, Length: 500}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Merge = %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(in, orig) {
		t.Fatal("Merge changed its input")
	}
	if got := Merge(nil, 10); len(got) != 0 {
		t.Fatalf("Merge(nil) = %v", got)
	}
}
