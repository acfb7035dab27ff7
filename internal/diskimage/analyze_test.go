package diskimage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/replicator/replicator/internal/testkit"
)

func TestDescribeFillsPartitionsAndExcluded(t *testing.T) {
	mkswap := testkit.RequireTool(t, "mkswap")
	path := filepath.Join(t.TempDir(), "swap.img")
	const size = 4 << 20
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkswap, "-q", "-p", "4096", path).CombinedOutput(); err != nil {
		t.Fatalf("mkswap: %v\n%s", err, out)
	}
	info, err := Describe(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	wantParts := []Partition{{Index: 0, Offset: 0, Length: size, Filesystem: "swap"}}
	wantExcl := []ExcludedRange{{Offset: 4096, Length: size - 4096, Reason: "swap"}}
	if !reflect.DeepEqual(info.Partitions, wantParts) || !reflect.DeepEqual(info.Excluded, wantExcl) {
		t.Errorf("partitions %+v excluded %+v; want %+v %+v", info.Partitions, info.Excluded, wantParts, wantExcl)
	}
}
