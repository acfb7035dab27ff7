package activities

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/metrics"
	"github.com/replicator/replicator/internal/testkit"
)

// TestPathRulesOnExt4AreAWarning: exclude.paths on a disk whose file system
// is ext4 exclude nothing, and say so in the disk's result and a metric.
func TestPathRulesOnExt4AreAWarning(t *testing.T) {
	mke2fs := testkit.RequireTool(t, "mke2fs")
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", path).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	img, err := diskimage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	reg := prometheus.NewRegistry()
	s := &Source{Metrics: metrics.NewDataPath(reg)}
	in := contract.TransferInput{Job: contract.JobSpec{Name: "nightly", ExcludePaths: []string{"/var/tmp/*"}}, DiskID: "0"}
	ranges, warning := s.exclusions(context.Background(), in, img, slog.Default())
	if len(ranges) != 0 {
		t.Fatalf("excluded %v from an ext4 disk", ranges)
	}
	if !strings.Contains(warning, "NTFS only") || !strings.Contains(warning, "ext4") {
		t.Fatalf("warning %q", warning)
	}
	if n := testutil.ToFloat64(s.Metrics.NotApplied().WithLabelValues("nightly", "ext4")); n != 1 {
		t.Fatalf("metric %v, want 1", n)
	}

	// Without path rules there is nothing to warn of.
	in.Job.ExcludePaths, in.Job.ExcludeSwap = nil, true
	if _, warning := s.exclusions(context.Background(), in, img, slog.Default()); warning != "" {
		t.Fatalf("warning %q without path rules", warning)
	}
}
