package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
	"github.com/replicator/replicator/internal/vhdx"
)

// makeReplica writes two restore points of a VM with two disks into the
// --dev datastore under dataDir and returns each point's bytes per disk.
func makeReplica(t *testing.T, dataDir string) [][][]byte {
	t.Helper()
	st, err := replica.Open(filepath.Join(dataDir, "replicas"))
	if err != nil {
		t.Fatal(err)
	}
	return replicatest.WriteTwoPoints(t, st, "demo", "0f9e-vm", "test")
}

func TestPointsFailoverVerify(t *testing.T) {
	dataDir := t.TempDir()
	want := makeReplica(t, dataDir)

	out, err := runStarter(t, "points", "demo", "web01", "--data-dir", dataDir)
	if err != nil {
		t.Fatalf("points: %v\n%s", err, out)
	}
	var pts []struct {
		ID       string `json:"id"`
		Time     string `json:"time"`
		Complete bool   `json:"complete"`
		Size     int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(out), &pts); err != nil || len(pts) != 2 || !pts[0].Complete || pts[0].Size <= 0 || pts[0].Time == "" || pts[0].ID >= pts[1].ID {
		t.Fatalf("points JSON: %v\n%s", err, out)
	}
	// The id works as well as the name.
	if out2, err := runStarter(t, "points", "demo", "0f9e-vm", "--data-dir", dataDir); err != nil || out2 != out {
		t.Fatalf("points by id: %v\n%s", err, out2)
	}

	// Newest point, raw, one file per disk.
	first := filepath.Join(dataDir, "out", "web01.img")
	os.MkdirAll(filepath.Dir(first), 0o755)
	if out, err := runStarter(t, "failover", "demo", "web01", "--out", first, "--data-dir", dataDir); err != nil {
		t.Fatalf("failover: %v\n%s", err, out)
	}
	for i, f := range []string{first, filepath.Join(dataDir, "out", "web01-1.img")} {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Equal(b, want[1][i]) {
			t.Fatalf("failover disk %d (%s): %v, bytes equal %v", i, f, err, bytes.Equal(b, want[1][i]))
		}
	}
	// An existing file is never overwritten.
	if _, err := runStarter(t, "failover", "demo", "web01", "--out", first, "--data-dir", dataDir); err == nil || !strings.Contains(err.Error(), first) {
		t.Fatalf("failover over existing files: %v", err)
	}

	// Older point, VHDX.
	vx := filepath.Join(dataDir, "out", "old.vhdx")
	if out, err := runStarter(t, "failover", "demo", "web01", "--point", pts[0].ID, "--out", vx, "--data-dir", dataDir); err != nil {
		t.Fatalf("failover --point: %v\n%s", err, out)
	}
	for i, f := range []string{vx, filepath.Join(dataDir, "out", "old-1.vhdx")} {
		d, err := vhdx.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, d.Size())
		d.ReadAt(b, 0)
		d.Close()
		if !bytes.Equal(b, want[0][i]) {
			t.Fatalf("failover --point %s disk %d differs", pts[0].ID, i)
		}
	}
	if _, err := runStarter(t, "failover", "demo", "web01", "--point", "nope", "--out", filepath.Join(dataDir, "n.raw"), "--data-dir", dataDir); err == nil || !strings.Contains(err.Error(), pts[1].ID) {
		t.Fatalf("failover of an unknown point should list the points: %v", err)
	}

	if out, err := runStarter(t, "verify", "demo", "web01", "--output", "json", "--data-dir", dataDir); err != nil || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	// Damage the digest of block 3 of the newest point's data disk.
	sums := filepath.Join(dataDir, "replicas", "demo", "0f9e-vm", "digests", "data", pts[1].ID+".sum")
	b, _ := os.ReadFile(sums)
	b[32+3*16] ^= 1
	os.WriteFile(sums, b, 0o644)
	out, err = runStarter(t, "verify", "demo", "web01", "--json", "--data-dir", dataDir)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "disk data: block 3 at offset 196608") || !strings.Contains(out, `"ok": false`) {
		t.Fatalf("verify of a damaged point: %v\n%s", err, out)
	}
	// For people: the verdict and the first bad block of the disk at fault.
	out, err = runStarter(t, "verify", "demo", "web01", "--data-dir", dataDir)
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "MISMATCH") || !regexp.MustCompile(`(?m)^data\s+16\s+.*\s1\s+3 at byte 196608`).MatchString(out) {
		t.Fatalf("verify of a damaged point, text: %v\n%s", err, out)
	}
	if out, err := runStarter(t, "verify", "demo", "web01", "--point", pts[0].ID, "--data-dir", dataDir); err != nil {
		t.Fatalf("verify of the intact older point: %v\n%s", err, out)
	}

	if _, err := runStarter(t, "points", "demo", "db02", "--data-dir", dataDir); err == nil || !strings.Contains(err.Error(), "web01 (0f9e-vm)") {
		t.Fatalf("points of an unknown VM should list the replicas: %v", err)
	}
	if _, err := runStarter(t, "points", "../demo", "web01", "--data-dir", dataDir); !errors.Is(err, replica.ErrBadName) {
		t.Fatalf("points with a bad job name: %v", err)
	}
}
