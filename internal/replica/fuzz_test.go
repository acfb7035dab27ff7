package replica

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadMeta: no replica.json, however damaged, panics the reader or yields
// metadata naming a file outside the replica.
func FuzzLoadMeta(f *testing.F) {
	f.Add([]byte(`{"version":1,"vm":{"id":"v","disks":[{"id":"d","size":512}]},"points":[{"id":"p","blockSize":512,"disks":[{"id":"d","size":512,"chain":["p.vhdx"],"digests":"p.sum"}]}]}`))
	f.Add([]byte(`{"version":1,"vm":{"id":"v"},"session":{"pointId":"s","blockSize":4096,"disks":[{"id":"d","size":512,"chain":["../x"],"digests":"s.sum"}]}}`))
	f.Add([]byte(`{"version":1,"vm":{"id":"v"},"merge":{"point":"p","disks":[{"id":"d","child":"a","base":"/etc/passwd"}]}}`))
	f.Add([]byte(`{"version":2}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, metaFile)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := loadMeta(path)
		if err != nil {
			return
		}
		names := []string{m.VM.ID}
		for _, p := range m.Points {
			for _, d := range p.Disks {
				names = append(append(names, d.ID, d.Digests), d.Chain...)
			}
		}
		if m.Session != nil {
			for _, d := range m.Session.Disks {
				names = append(append(names, d.ID, d.Digests), d.Chain...)
			}
		}
		if m.Merge != nil {
			for _, d := range m.Merge.Disks {
				names = append(append(names, d.ID, d.Child, d.Base), d.Relink...)
			}
		}
		for _, n := range names {
			if CheckName("file", n) != nil {
				t.Fatalf("accepted metadata naming %q", n)
			}
		}
	})
}

// FuzzParseDigests: a damaged digest file is an error, never a panic or a
// table that does not fit the disk.
func FuzzParseDigests(f *testing.F) {
	t := zeroTable(5000, 1024)
	good := append(t.header(), make([]byte, 16*len(t.Sums))...)
	f.Add(good, int64(5000))
	f.Add(good[:40], int64(5000))
	f.Add([]byte("RPDIGST1"), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		tab, err := parseDigests("x.sum", b, size)
		if err != nil {
			return
		}
		if tab.Len() != blockCount(size, tab.BlockSize) || tab.DiskSize != size {
			t.Fatalf("table of %d blocks of %d accepted for a disk of %d", tab.Len(), tab.BlockSize, size)
		}
	})
}
